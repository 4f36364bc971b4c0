-- Statements that run after the data, in this order: sequence values, sequence
-- ownership, primary key / unique / exclusion / NOT VALID constraints, other indexes,
-- index partitions, foreign keys, triggers, table settings (row security, policies,
-- replica identity, clustering, rules, extended statistics), publications, comments.
-- Columns: rank, kind, name, statement, and the key (catalog oid:object oid) of the
-- object the statement is about (scope.sql tells its schema and relation).
SELECT 1, 'SEQUENCE SET', format('%I.%I', n.nspname, c.relname),
       format('SELECT pg_catalog.setval(%L, %s, %s);', format('%I.%I', n.nspname, c.relname),
              coalesce(pg_sequence_last_value(c.oid), s.seqstart),
              CASE WHEN pg_sequence_last_value(c.oid) IS NULL THEN 'false' ELSE 'true' END),
       c.tableoid || ':' || c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind = 'S'
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 2, 'SEQUENCE OWNED BY', format('%I.%I', n.nspname, c.relname),
       format('ALTER SEQUENCE %I.%I OWNED BY %s.%I;', n.nspname, c.relname, d.refobjid::regclass::text, a.attname),
       c.tableoid || ':' || c.oid
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_depend d ON d.classid = c.tableoid AND d.objid = c.oid AND d.deptype = 'a'
                AND d.refclassid = c.tableoid AND d.refobjsubid > 0
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind = 'S'
UNION ALL
SELECT 3, 'CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, c.relname),
       format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s;', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)),
       k.tableoid || ':' || k.oid
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype IN ('p', 'u', 'x')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
  -- Keys that views rely on are created with the views (objects.sql).
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.refclassid = k.tableoid AND d.refobjid = k.oid
                                            AND d.classid = 'pg_rewrite'::regclass)
UNION ALL
-- A NOT VALID check holds for new rows only: the data may break it.
SELECT 3, 'CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, c.relname),
       format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s;', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)),
       k.tableoid || ':' || k.oid
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype = 'c' AND NOT k.convalidated AND k.conislocal
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 3, 'DOMAIN CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, t.typname),
       format('ALTER DOMAIN %I.%I ADD CONSTRAINT %I %s;', n.nspname, t.typname, k.conname, pg_get_constraintdef(k.oid)),
       k.tableoid || ':' || k.oid
FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype = 'c' AND NOT k.convalidated
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT 4, 'INDEX', format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid) || ';',
       ic.tableoid || ':' || ic.oid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p', 'm')
  AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 5, 'INDEX ATTACH', h.inhrelid::regclass::text,
       format('ALTER INDEX %s ATTACH PARTITION %s;', h.inhparent::regclass::text, h.inhrelid::regclass::text),
       ic.tableoid || ':' || ic.oid
FROM pg_inherits h JOIN pg_class ic ON ic.oid = h.inhrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND ic.relkind IN ('i', 'I')
UNION ALL
SELECT 6, 'FK CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, c.relname),
       format('ALTER TABLE %s%I.%I ADD CONSTRAINT %I %s;', CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END,
              n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)),
       k.tableoid || ':' || k.oid
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype = 'f' AND k.conparentid = 0
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 7, 'TRIGGER', format('%I ON %I.%I', t.tgname, n.nspname, c.relname),
       pg_get_triggerdef(t.oid) || ';'
       || CASE t.tgenabled WHEN 'D' THEN format(E'\nALTER TABLE %I.%I DISABLE TRIGGER %I;', n.nspname, c.relname, t.tgname)
                           WHEN 'R' THEN format(E'\nALTER TABLE %I.%I ENABLE REPLICA TRIGGER %I;', n.nspname, c.relname, t.tgname)
                           WHEN 'A' THEN format(E'\nALTER TABLE %I.%I ENABLE ALWAYS TRIGGER %I;', n.nspname, c.relname, t.tgname)
                           ELSE '' END,
       t.tableoid || ':' || t.oid
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND NOT t.tgisinternal AND t.tgparentid = 0
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 8, 'ROW SECURITY', format('%I.%I', n.nspname, c.relname),
       format('ALTER TABLE ONLY %I.%I ENABLE ROW LEVEL SECURITY;', n.nspname, c.relname)
       || CASE WHEN c.relforcerowsecurity THEN format(E'\nALTER TABLE ONLY %I.%I FORCE ROW LEVEL SECURITY;', n.nspname, c.relname)
               ELSE '' END,
       c.tableoid || ':' || c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p') AND (c.relrowsecurity OR c.relforcerowsecurity)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 8, 'POLICY', format('%I ON %I.%I', p.polname, n.nspname, c.relname),
       format('CREATE POLICY %I ON %I.%I AS %s FOR %s TO %s%s%s;', p.polname, n.nspname, c.relname,
              CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
              CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE'
                            ELSE 'ALL' END,
              (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', ' ORDER BY r)
               FROM unnest(p.polroles) r),
              CASE WHEN p.polqual IS NOT NULL THEN ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')' ELSE '' END,
              CASE WHEN p.polwithcheck IS NOT NULL THEN ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')'
                   ELSE '' END),
       p.tableoid || ':' || p.oid
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 8, 'REPLICA IDENTITY', format('%I.%I', n.nspname, c.relname),
       format('ALTER TABLE ONLY %I.%I REPLICA IDENTITY %s;', n.nspname, c.relname,
              CASE c.relreplident WHEN 'n' THEN 'NOTHING' WHEN 'f' THEN 'FULL'
                   ELSE 'USING INDEX ' || (SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                                           WHERE i.indrelid = c.oid AND i.indisreplident) END),
       c.tableoid || ':' || c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p') AND c.relreplident <> 'd'
  AND (c.relreplident <> 'i' OR EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 8, 'CLUSTER ON', format('%I.%I', n.nspname, c.relname),
       format('ALTER TABLE ONLY %I.%I CLUSTER ON %I;', n.nspname, c.relname, ic.relname),
       c.tableoid || ':' || c.oid
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND i.indisclustered
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 8, 'RULE', format('%I ON %I.%I', r.rulename, n.nspname, c.relname),
       pg_get_ruledef(r.oid)
       || CASE r.ev_enabled WHEN 'D' THEN format(E'\nALTER TABLE %I.%I DISABLE RULE %I;', n.nspname, c.relname, r.rulename)
                            WHEN 'R' THEN format(E'\nALTER TABLE %I.%I ENABLE REPLICA RULE %I;', n.nspname, c.relname, r.rulename)
                            WHEN 'A' THEN format(E'\nALTER TABLE %I.%I ENABLE ALWAYS RULE %I;', n.nspname, c.relname, r.rulename)
                            ELSE '' END,
       r.tableoid || ':' || r.oid
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND r.rulename <> '_RETURN'
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 8, 'STATISTICS', format('%I.%I', n.nspname, s.stxname),
       pg_get_statisticsobjdef(s.oid) || ';'
       || CASE WHEN s.stxstattarget >= 0
               THEN format(E'\nALTER STATISTICS %I.%I SET STATISTICS %s;', n.nspname, s.stxname, s.stxstattarget) ELSE '' END,
       s.tableoid || ':' || s.oid
FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
UNION ALL
SELECT 8, 'PUBLICATION', quote_ident(p.pubname),
       format('CREATE PUBLICATION %I%s WITH (publish = %L, publish_via_partition_root = %s);', p.pubname,
              CASE WHEN p.puballtables THEN ' FOR ALL TABLES' ELSE '' END,
              concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                        CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END),
              CASE WHEN p.pubviaroot THEN 'true' ELSE 'false' END)
       || coalesce((SELECT string_agg(format(E'\nALTER PUBLICATION %I ADD TABLE ONLY %s%s%s;', p.pubname, r.prrelid::regclass::text,
                                             coalesce(' (' || (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.position)
                                                               FROM unnest(r.prattrs::int2[]) WITH ORDINALITY k (attnum, position)
                                                               JOIN pg_attribute a ON a.attrelid = r.prrelid AND a.attnum = k.attnum)
                                                      || ')', ''),
                                             coalesce(' WHERE (' || pg_get_expr(r.prqual, r.prrelid) || ')', '')),
                                      '' ORDER BY r.prrelid::regclass::text)
                    FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid
                    WHERE r.prpubid = p.oid AND c.relnamespace IN (SELECT oid FROM schemas)), '')
       || coalesce((SELECT string_agg(format(E'\nALTER PUBLICATION %I ADD TABLES IN SCHEMA %I;', p.pubname, n.nspname), ''
                                      ORDER BY n.nspname)
                    FROM pg_publication_namespace pn JOIN pg_namespace n ON n.oid = pn.pnnspid
                    WHERE pn.pnpubid = p.oid AND n.oid IN (SELECT oid FROM schemas)), ''),
       p.tableoid || ':' || p.oid
FROM pg_publication p
WHERE (SELECT whole FROM whole_database)
UNION ALL
SELECT 9, 'COMMENT', o.identity,
       format('COMMENT ON %s IS %L;',
              CASE WHEN o.type = 'domain constraint'
                   THEN (SELECT format('CONSTRAINT %I ON DOMAIN %s', k.conname, format_type(k.contypid, NULL))
                         FROM pg_constraint k WHERE k.oid = d.objoid)
                   ELSE keyword || ' ' || o.identity END,
              d.description),
       d.classoid || ':' || d.objoid
FROM pg_description d
CROSS JOIN LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
CROSS JOIN LATERAL (
    SELECT CASE o.type
               WHEN 'table' THEN 'TABLE' WHEN 'view' THEN 'VIEW' WHEN 'materialized view' THEN 'MATERIALIZED VIEW'
               WHEN 'sequence' THEN 'SEQUENCE' WHEN 'index' THEN 'INDEX' WHEN 'type' THEN 'TYPE'
               WHEN 'composite type' THEN 'TYPE' WHEN 'domain' THEN 'DOMAIN' WHEN 'function' THEN 'FUNCTION'
               WHEN 'procedure' THEN 'PROCEDURE' WHEN 'schema' THEN 'SCHEMA' WHEN 'trigger' THEN 'TRIGGER'
               WHEN 'table constraint' THEN 'CONSTRAINT' WHEN 'domain constraint' THEN 'CONSTRAINT' WHEN 'policy' THEN 'POLICY' WHEN 'rule' THEN 'RULE'
               WHEN 'statistics object' THEN 'STATISTICS' WHEN 'foreign table' THEN 'FOREIGN TABLE'
               WHEN 'collation' THEN 'COLLATION' WHEN 'operator' THEN 'OPERATOR' WHEN 'operator class' THEN 'OPERATOR CLASS'
               WHEN 'operator family' THEN 'OPERATOR FAMILY' WHEN 'aggregate' THEN 'AGGREGATE' WHEN 'cast' THEN 'CAST'
               WHEN 'text search parser' THEN 'TEXT SEARCH PARSER' WHEN 'text search template' THEN 'TEXT SEARCH TEMPLATE'
               WHEN 'text search dictionary' THEN 'TEXT SEARCH DICTIONARY'
               WHEN 'text search configuration' THEN 'TEXT SEARCH CONFIGURATION'
               WHEN 'foreign-data wrapper' THEN 'FOREIGN DATA WRAPPER' WHEN 'server' THEN 'SERVER'
               WHEN 'publication' THEN 'PUBLICATION' WHEN 'large object' THEN 'LARGE OBJECT'
               ELSE CASE WHEN o.type LIKE '% column' THEN 'COLUMN' END
           END AS keyword
) k
WHERE k.keyword IS NOT NULL
  -- Objects of no schema come with the whole database; event triggers bring their own.
  AND CASE WHEN d.classoid IN ('pg_cast'::regclass, 'pg_foreign_data_wrapper'::regclass, 'pg_foreign_server'::regclass,
                               'pg_publication'::regclass, 'pg_largeobject'::regclass)
           THEN (SELECT whole FROM whole_database)
      ELSE CASE d.classoid
          WHEN 'pg_namespace'::regclass THEN d.objoid
          WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objoid)
          WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objoid)
          WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objoid)
          WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = d.objoid)
          WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                                            WHERE t.oid = d.objoid)
          WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                                           WHERE p.oid = d.objoid)
          WHEN 'pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                                            WHERE r.oid = d.objoid AND r.rulename <> '_RETURN')
          WHEN 'pg_statistic_ext'::regclass THEN (SELECT stxnamespace FROM pg_statistic_ext WHERE oid = d.objoid)
          WHEN 'pg_collation'::regclass THEN (SELECT collnamespace FROM pg_collation WHERE oid = d.objoid)
          WHEN 'pg_operator'::regclass THEN (SELECT oprnamespace FROM pg_operator WHERE oid = d.objoid)
          WHEN 'pg_opclass'::regclass THEN (SELECT opcnamespace FROM pg_opclass WHERE oid = d.objoid)
          WHEN 'pg_opfamily'::regclass THEN (SELECT opfnamespace FROM pg_opfamily WHERE oid = d.objoid)
          WHEN 'pg_ts_parser'::regclass THEN (SELECT prsnamespace FROM pg_ts_parser WHERE oid = d.objoid)
          WHEN 'pg_ts_template'::regclass THEN (SELECT tmplnamespace FROM pg_ts_template WHERE oid = d.objoid)
          WHEN 'pg_ts_dict'::regclass THEN (SELECT dictnamespace FROM pg_ts_dict WHERE oid = d.objoid)
          WHEN 'pg_ts_config'::regclass THEN (SELECT cfgnamespace FROM pg_ts_config WHERE oid = d.objoid)
      END IN (SELECT oid FROM schemas) END
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e')
ORDER BY 1, 3
