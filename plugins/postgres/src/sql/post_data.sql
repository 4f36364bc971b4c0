-- Statements that run after the data, in this order: sequence values, sequence
-- ownership, primary key / unique / exclusion constraints, other indexes, index
-- partitions, foreign keys, triggers, comments. Columns: rank, kind, name, statement.
SELECT 1, 'SEQUENCE SET', format('%I.%I', n.nspname, c.relname),
       format('SELECT pg_catalog.setval(%L, %s, %s);', format('%I.%I', n.nspname, c.relname),
              coalesce(pg_sequence_last_value(c.oid), s.seqstart),
              CASE WHEN pg_sequence_last_value(c.oid) IS NULL THEN 'false' ELSE 'true' END)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind = 'S'
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 2, 'SEQUENCE OWNED BY', format('%I.%I', n.nspname, c.relname),
       format('ALTER SEQUENCE %I.%I OWNED BY %s.%I;', n.nspname, c.relname, d.refobjid::regclass::text, a.attname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_depend d ON d.classid = c.tableoid AND d.objid = c.oid AND d.deptype = 'a'
                AND d.refclassid = c.tableoid AND d.refobjsubid > 0
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind = 'S'
UNION ALL
SELECT 3, 'CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, c.relname),
       format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s;', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype IN ('p', 'u', 'x')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 4, 'INDEX', format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid) || ';'
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p', 'm')
  AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 5, 'INDEX ATTACH', h.inhrelid::regclass::text,
       format('ALTER INDEX %s ATTACH PARTITION %s;', h.inhparent::regclass::text, h.inhrelid::regclass::text)
FROM pg_inherits h JOIN pg_class ic ON ic.oid = h.inhrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND ic.relkind IN ('i', 'I')
UNION ALL
SELECT 6, 'FK CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, c.relname),
       format('ALTER TABLE %s%I.%I ADD CONSTRAINT %I %s;', CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END,
              n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype = 'f' AND k.conparentid = 0
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 7, 'TRIGGER', format('%I ON %I.%I', t.tgname, n.nspname, c.relname),
       pg_get_triggerdef(t.oid) || ';'
       || CASE t.tgenabled WHEN 'D' THEN format(E'\nALTER TABLE %I.%I DISABLE TRIGGER %I;', n.nspname, c.relname, t.tgname)
                           WHEN 'R' THEN format(E'\nALTER TABLE %I.%I ENABLE REPLICA TRIGGER %I;', n.nspname, c.relname, t.tgname)
                           WHEN 'A' THEN format(E'\nALTER TABLE %I.%I ENABLE ALWAYS TRIGGER %I;', n.nspname, c.relname, t.tgname)
                           ELSE '' END
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND NOT t.tgisinternal AND t.tgparentid = 0
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 9, 'COMMENT', o.identity, format('COMMENT ON %s %s IS %L;', keyword, o.identity, d.description)
FROM pg_description d
CROSS JOIN LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
CROSS JOIN LATERAL (
    SELECT CASE o.type
               WHEN 'table' THEN 'TABLE' WHEN 'view' THEN 'VIEW' WHEN 'materialized view' THEN 'MATERIALIZED VIEW'
               WHEN 'sequence' THEN 'SEQUENCE' WHEN 'index' THEN 'INDEX' WHEN 'type' THEN 'TYPE'
               WHEN 'composite type' THEN 'TYPE' WHEN 'domain' THEN 'DOMAIN' WHEN 'function' THEN 'FUNCTION'
               WHEN 'procedure' THEN 'PROCEDURE' WHEN 'schema' THEN 'SCHEMA' WHEN 'trigger' THEN 'TRIGGER'
               WHEN 'table constraint' THEN 'CONSTRAINT' WHEN 'domain constraint' THEN 'CONSTRAINT'
               ELSE CASE WHEN o.type LIKE '% column' THEN 'COLUMN' END
           END AS keyword
) k
WHERE k.keyword IS NOT NULL
  AND CASE d.classoid
          WHEN 'pg_namespace'::regclass THEN d.objoid
          WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objoid)
          WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objoid)
          WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objoid)
          WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = d.objoid)
          WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                                            WHERE t.oid = d.objoid)
      END IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e')
ORDER BY 1, 3
