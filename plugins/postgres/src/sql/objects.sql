-- Schema objects created before the data, one row each:
-- key (catalog oid:object oid, matching pg_depend), kind, name, statement, rank (the
-- order when dependencies allow any), and for populated materialized views the REFRESH
-- statement that runs after the data.
, separate_defaults AS (
    -- Column defaults that call functions not built in (see DEFAULT below). A generated
    -- column's expression cannot be set apart from its column: it stays in CREATE TABLE.
    SELECT DISTINCT d.objid AS oid
    FROM pg_depend d
    JOIN pg_attrdef ad ON ad.oid = d.objid
    JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
    WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid >= 16384
      AND a.attgenerated = ''
)
SELECT n.tableoid || ':' || n.oid, 'SCHEMA', quote_ident(n.nspname),
       CASE WHEN n.nspname = 'public' THEN '' ELSE format('CREATE SCHEMA %I;', n.nspname) END, 10, NULL
FROM pg_namespace n
WHERE n.oid IN (SELECT oid FROM schemas)
UNION ALL
SELECT x.tableoid || ':' || x.oid, 'EXTENSION', quote_ident(x.extname),
       format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I VERSION %L;', x.extname, n.nspname, x.extversion), 20, NULL
FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
UNION ALL
SELECT CASE WHEN t.typtype = 'c' THEN c.tableoid || ':' || c.oid ELSE t.tableoid || ':' || t.oid END,
       CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname),
       CASE t.typtype
           WHEN 'e' THEN format('CREATE TYPE %I.%I AS ENUM (%s);', n.nspname, t.typname,
               (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                FROM pg_enum e WHERE e.enumtypid = t.oid))
           WHEN 'c' THEN format(E'CREATE TYPE %I.%I AS (\n    %s\n);', n.nspname, t.typname,
               (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
                       || CASE WHEN a.attcollation <> 0 AND a.attcollation <> at.typcollation
                               THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                       E',\n    ' ORDER BY a.attnum)
                FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
                WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
           WHEN 'd' THEN format('CREATE DOMAIN %I.%I AS %s%s%s%s%s;', n.nspname, t.typname,
               format_type(t.typbasetype, t.typtypmod),
               CASE WHEN t.typcollation <> 0 AND t.typcollation <> bt.typcollation
                    THEN ' COLLATE ' || t.typcollation::regcollation::text ELSE '' END,
               CASE WHEN t.typdefaultbin IS NOT NULL
                    THEN ' DEFAULT ' || pg_get_expr(t.typdefaultbin, 0) ELSE '' END,
               CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END,
               (SELECT coalesce(string_agg(format(' CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)), ''
                                           ORDER BY k.conname), '')
                FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c' AND k.convalidated))
           ELSE format('CREATE TYPE %I.%I AS RANGE (SUBTYPE = %s%s%s, MULTIRANGE_TYPE_NAME = %s);', n.nspname, t.typname,
               format_type(r.rngsubtype, NULL),
               CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation
                    THEN ', COLLATION = ' || r.rngcollation::regcollation::text ELSE '' END,
               CASE WHEN r.rngsubdiff <> 0 THEN ', SUBTYPE_DIFF = ' || r.rngsubdiff::regproc::text ELSE '' END,
               r.rngmultitypid::regtype::text)
       END, 30, NULL
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
LEFT JOIN pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_type st ON st.oid = r.rngsubtype
WHERE n.oid IN (SELECT oid FROM schemas)
  AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT p.tableoid || ':' || p.oid, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       p.oid::regprocedure::text, pg_get_functiondef(p.oid) || ';', 40, NULL
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = p.tableoid AND e.objid = p.oid AND e.deptype IN ('e', 'i'))
UNION ALL
SELECT c.tableoid || ':' || c.oid, 'SEQUENCE', format('%I.%I', n.nspname, c.relname),
       format('CREATE %sSEQUENCE %I.%I AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s%s;',
              CASE WHEN c.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END, n.nspname, c.relname,
              format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache,
              CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END), 50, NULL
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind = 'S'
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype IN ('e', 'i'))
UNION ALL
-- Tables and foreign tables. A partition is created as a table of its own, with its own
-- column order, and attached to its parent (as pg_dump does); a typed table names only
-- the options its columns add to the type.
SELECT c.tableoid || ':' || c.oid, CASE c.relkind WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       format('%I.%I', n.nspname, c.relname),
       format('CREATE %s%sTABLE %I.%I %s%s%s%s%s;%s%s',
              CASE WHEN c.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END,
              CASE WHEN c.relkind = 'f' THEN 'FOREIGN ' ELSE '' END, n.nspname, c.relname,
              CASE WHEN c.reloftype <> 0 THEN 'OF ' || c.reloftype::regtype::text || ' ' ELSE '' END,
              CASE WHEN c.reloftype <> 0 AND columns.list IS NULL AND checks.list IS NULL THEN ''
                   ELSE E'(\n    ' || concat_ws(E',\n    ', columns.list, checks.list) || E'\n)' END,
              CASE WHEN c.relispartition THEN ''
                   ELSE coalesce((SELECT ' INHERITS (' || string_agg(h.inhparent::regclass::text, ', ' ORDER BY h.inhseqno) || ')'
                                  FROM pg_inherits h WHERE h.inhrelid = c.oid), '') END,
              CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE '' END,
              CASE WHEN c.relkind = 'f'
                   THEN ' SERVER ' || (SELECT quote_ident(s.srvname) FROM pg_foreign_table ft
                                       JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = c.oid)
                        || coalesce((SELECT ' ' || (SELECT 'OPTIONS (' || string_agg(format('%I %L', o.option_name, o.option_value), ', ') || ')' FROM pg_options_to_table(ft.ftoptions) o) FROM pg_foreign_table ft WHERE ft.ftrelid = c.oid), '')
                   WHEN c.reloptions IS NOT NULL THEN ' WITH (' || array_to_string(c.reloptions, ', ') || ')'
                   ELSE '' END,
              CASE WHEN c.relispartition
                   THEN format(E'\nALTER TABLE ONLY %s ATTACH PARTITION %I.%I %s;',
                               (SELECT h.inhparent::regclass::text FROM pg_inherits h WHERE h.inhrelid = c.oid),
                               n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid))
                   ELSE '' END,
              coalesce(toast.options, '') || coalesce(column_settings.list, '')),
       60, NULL
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT string_agg(
               format('%I', a.attname)
               || CASE WHEN c.reloftype <> 0 THEN ' WITH OPTIONS' ELSE ' ' || format_type(a.atttypid, a.atttypmod) END
               || CASE WHEN a.attfdwoptions IS NOT NULL THEN ' ' || (SELECT 'OPTIONS (' || string_agg(format('%I %L', o.option_name, o.option_value), ', ') || ')' FROM pg_options_to_table(a.attfdwoptions) o) ELSE '' END
               || CASE WHEN a.attcollation <> 0 AND a.attcollation <> at.typcollation
                       THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
               || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED'
                       WHEN d.adbin IS NOT NULL AND NOT separate_default THEN ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid)
                       ELSE '' END
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce((
                      SELECT format(' GENERATED %s AS IDENTITY (SEQUENCE NAME %I.%I START WITH %s INCREMENT BY %s MINVALUE %s MAXVALUE %s CACHE %s%s)',
                                    CASE a.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END, sn.nspname, sc.relname,
                                    s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                                    CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END)
                      FROM pg_depend sd
                      JOIN pg_class sc ON sc.oid = sd.objid AND sc.relkind = 'S'
                      JOIN pg_namespace sn ON sn.oid = sc.relnamespace
                      JOIN pg_sequence s ON s.seqrelid = sc.oid
                      WHERE a.attidentity <> '' AND sd.classid = c.tableoid AND sd.refclassid = c.tableoid
                        AND sd.refobjid = c.oid AND sd.refobjsubid = a.attnum AND sd.deptype = 'i'), ''),
               E',\n    ' ORDER BY a.attnum) AS list
    FROM pg_attribute a
    JOIN pg_type at ON at.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    CROSS JOIN LATERAL (SELECT coalesce(d.oid IN (SELECT oid FROM separate_defaults), false) AS separate_default) placement
    -- Inherited columns come from the parents, a typed table's from its type (but for
    -- what the table adds).
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND (a.attislocal OR c.relispartition)
      AND (c.reloftype = 0 OR a.attnotnull OR (d.adbin IS NOT NULL AND NOT separate_default))
) columns
CROSS JOIN LATERAL (
    -- NOT VALID checks are added after the data, which may break them. A partition needs
    -- its parent's checks before it is attached.
    SELECT string_agg(format('CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)), E',\n    ' ORDER BY k.conname) AS list
    FROM pg_constraint k
    WHERE k.conrelid = c.oid AND k.contype = 'c' AND (k.conislocal OR c.relispartition) AND k.convalidated
) checks
LEFT JOIN LATERAL (
    SELECT format(E'\nALTER TABLE ONLY %I.%I SET (%s);', n.nspname, c.relname,
                  (SELECT string_agg('toast.' || o, ', ') FROM unnest(tc.reloptions) o)) AS options
    FROM pg_class tc WHERE tc.oid = c.reltoastrelid AND tc.reloptions IS NOT NULL
) toast ON true
CROSS JOIN LATERAL (
    -- What CREATE TABLE cannot say per column: an inherited column's own default and
    -- NOT NULL, and storage, compression, statistics target and options.
    SELECT string_agg(
               CASE WHEN NOT a.attislocal AND NOT c.relispartition AND d.adbin IS NOT NULL AND a.attgenerated = ''
                         AND d.oid NOT IN (SELECT oid FROM separate_defaults)
                    THEN format(E'\nALTER TABLE ONLY %I.%I ALTER COLUMN %I SET DEFAULT %s;', n.nspname, c.relname, a.attname,
                                pg_get_expr(d.adbin, d.adrelid)) ELSE '' END
               || CASE WHEN NOT a.attislocal AND NOT c.relispartition AND a.attnotnull
                       THEN format(E'\nALTER TABLE ONLY %I.%I ALTER COLUMN %I SET NOT NULL;', n.nspname, c.relname, a.attname)
                       ELSE '' END
               || CASE WHEN a.attstorage <> at.typstorage
                       THEN format(E'\nALTER TABLE ONLY %I.%I ALTER COLUMN %I SET STORAGE %s;', n.nspname, c.relname, a.attname,
                                   CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' WHEN 'm' THEN 'MAIN'
                                                     ELSE 'EXTENDED' END) ELSE '' END
               || CASE WHEN a.attcompression <> ''
                       THEN format(E'\nALTER TABLE ONLY %I.%I ALTER COLUMN %I SET COMPRESSION %s;', n.nspname, c.relname, a.attname,
                                   CASE a.attcompression WHEN 'l' THEN 'lz4' ELSE 'pglz' END) ELSE '' END
               || CASE WHEN a.attstattarget >= 0
                       THEN format(E'\nALTER TABLE ONLY %I.%I ALTER COLUMN %I SET STATISTICS %s;', n.nspname, c.relname, a.attname,
                                   a.attstattarget) ELSE '' END
               || CASE WHEN a.attoptions IS NOT NULL
                       THEN format(E'\nALTER TABLE ONLY %I.%I ALTER COLUMN %I SET (%s);', n.nspname, c.relname, a.attname,
                                   array_to_string(a.attoptions, ', ')) ELSE '' END,
               '' ORDER BY a.attnum) AS list
    FROM pg_attribute a
    JOIN pg_type at ON at.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
) column_settings
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p', 'f')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
-- A default that calls a function of the backup is set once the table and the function
-- exist: a function with a SQL-standard body may read the very table (a cycle otherwise).
SELECT d.tableoid || ':' || d.oid, 'DEFAULT', format('%s.%I', c.oid::regclass::text, a.attname),
       format('ALTER %sTABLE ONLY %s ALTER COLUMN %I SET DEFAULT %s;', CASE WHEN c.relkind = 'f' THEN 'FOREIGN ' ELSE '' END,
              c.oid::regclass::text, a.attname, pg_get_expr(d.adbin, d.adrelid)),
       65, NULL
FROM pg_attrdef d
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
JOIN pg_class c ON c.oid = d.adrelid
WHERE d.oid IN (SELECT oid FROM separate_defaults) AND c.relnamespace IN (SELECT oid FROM schemas)
UNION ALL
-- A key that a view relies on (GROUP BY the primary key, a functional dependency) is
-- created before the view instead of after the data.
SELECT k.tableoid || ':' || k.oid, 'CONSTRAINT', format('%I ON %I.%I', k.conname, n.nspname, c.relname),
       format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s;', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)),
       70, NULL
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND k.contype IN ('p', 'u', 'x')
  AND EXISTS (SELECT FROM pg_depend d WHERE d.refclassid = k.tableoid AND d.refobjid = k.oid AND d.classid = 'pg_rewrite'::regclass)
UNION ALL
SELECT c.tableoid || ':' || c.oid, CASE c.relkind WHEN 'v' THEN 'VIEW' ELSE 'MATERIALIZED VIEW' END,
       format('%I.%I', n.nspname, c.relname),
       format(CASE c.relkind WHEN 'v' THEN E'CREATE VIEW %I.%I%s AS\n%s;' ELSE E'CREATE MATERIALIZED VIEW %I.%I%s AS\n%s\n  WITH NO DATA;' END,
              n.nspname, c.relname,
              CASE WHEN c.reloptions IS NOT NULL THEN ' WITH (' || array_to_string(c.reloptions, ', ') || ')' ELSE '' END,
              rtrim(pg_get_viewdef(c.oid), ';'))
       -- A view's column defaults apply to inserts through the view.
       || coalesce((SELECT string_agg(format(E'\nALTER VIEW %I.%I ALTER COLUMN %I SET DEFAULT %s;', n.nspname, c.relname,
                                             a.attname, pg_get_expr(d.adbin, d.adrelid)), '' ORDER BY a.attnum)
                    FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                    WHERE d.adrelid = c.oid), ''),
       70, CASE WHEN c.relkind = 'm' AND c.relispopulated THEN format('REFRESH MATERIALIZED VIEW %I.%I;', n.nspname, c.relname) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('v', 'm')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
