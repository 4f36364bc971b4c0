-- The objects a backup creates that have an owner and privileges: keyword (as in ALTER
-- ... OWNER TO), name (qualified and quoted), owner, ACL, ACL kind (as acldefault takes
-- it), whether the object has its own owner (a sequence owned by a column, or an
-- identity sequence, follows its table), what GRANT calls it, and the key (catalog
-- oid:object oid) of the object. Event triggers have
-- their owners set after them (event_triggers.sql).
SELECT 'SCHEMA' AS keyword, quote_ident(n.nspname) AS name, n.nspowner AS owner, n.nspacl AS acl,
       'n'::"char" AS acl_kind, true AS own_owner, 'SCHEMA ' || quote_ident(n.nspname) AS acl_target,
       n.tableoid || ':' || n.oid AS key
FROM pg_namespace n
WHERE n.oid IN (SELECT oid FROM schemas)
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname), t.typowner, t.typacl,
       'T', true, CASE t.typtype WHEN 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || format('%I.%I', n.nspname, t.typname),
       t.tableoid || ':' || t.oid
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE n.oid IN (SELECT oid FROM schemas)
  AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       CASE WHEN p.prokind = 'a'
            THEN format('%I.%I(%s)', n.nspname, p.proname,
                        CASE WHEN p.pronargs = 0 THEN '*' ELSE pg_get_function_identity_arguments(p.oid) END)
            ELSE p.oid::regprocedure::text END,
       p.proowner, p.proacl, 'f', true,
       CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' ELSE 'FUNCTION ' END || p.oid::regprocedure::text,
       p.tableoid || ':' || p.oid
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND p.prokind IN ('f', 'p', 'a')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = p.tableoid AND e.objid = p.oid AND e.deptype IN ('e', 'i'))
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       format('%I.%I', n.nspname, c.relname), c.relowner, c.relacl,
       CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
       NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = c.tableoid AND d.objid = c.oid AND d.refclassid = c.tableoid
                                             AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')),
       CASE c.relkind WHEN 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || format('%I.%I', n.nspname, c.relname),
       c.tableoid || ':' || c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
-- Objects with an owner and no privileges.
SELECT o.keyword, o.name, o.owner, NULL, NULL, true, NULL, o.catalog || ':' || o.oid
FROM (
    SELECT 'COLLATION' AS keyword, format('%I.%I', n.nspname, c.collname) AS name, c.collowner AS owner,
           c.tableoid AS catalog, c.oid
    FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace WHERE n.oid IN (SELECT oid FROM schemas)
    UNION ALL
    SELECT 'OPERATOR', o.oid::regoperator::text, o.oprowner, o.tableoid, o.oid
    FROM pg_operator o WHERE o.oprnamespace IN (SELECT oid FROM schemas) AND o.oprcode <> 0
    UNION ALL
    SELECT 'OPERATOR FAMILY', format('%I.%I USING %I', n.nspname, f.opfname, am.amname), f.opfowner, f.tableoid, f.oid
    FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod
    WHERE n.oid IN (SELECT oid FROM schemas)
    UNION ALL
    SELECT 'OPERATOR CLASS', format('%I.%I USING %I', n.nspname, c.opcname, am.amname), c.opcowner, c.tableoid, c.oid
    FROM pg_opclass c JOIN pg_namespace n ON n.oid = c.opcnamespace JOIN pg_am am ON am.oid = c.opcmethod
    WHERE n.oid IN (SELECT oid FROM schemas)
    UNION ALL
    SELECT 'TEXT SEARCH DICTIONARY', format('%I.%I', n.nspname, d.dictname), d.dictowner, d.tableoid, d.oid
    FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace WHERE n.oid IN (SELECT oid FROM schemas)
    UNION ALL
    SELECT 'TEXT SEARCH CONFIGURATION', format('%I.%I', n.nspname, c.cfgname), c.cfgowner, c.tableoid, c.oid
    FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace WHERE n.oid IN (SELECT oid FROM schemas)
    UNION ALL
    SELECT 'PUBLICATION', quote_ident(p.pubname), p.pubowner, p.tableoid, p.oid
    FROM pg_publication p WHERE (SELECT whole FROM whole_database)
) o
WHERE NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = o.catalog AND e.objid = o.oid AND e.deptype = 'e')
UNION ALL
-- Objects of no schema, with the whole database.
SELECT 'FOREIGN DATA WRAPPER', quote_ident(w.fdwname), w.fdwowner, w.fdwacl, 'F', true,
       'FOREIGN DATA WRAPPER ' || quote_ident(w.fdwname), w.tableoid || ':' || w.oid
FROM pg_foreign_data_wrapper w
WHERE (SELECT whole FROM whole_database)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = w.tableoid AND e.objid = w.oid AND e.deptype = 'e')
UNION ALL
SELECT 'SERVER', quote_ident(s.srvname), s.srvowner, s.srvacl, 'S', true, 'FOREIGN SERVER ' || quote_ident(s.srvname),
       s.tableoid || ':' || s.oid
FROM pg_foreign_server s
WHERE (SELECT whole FROM whole_database)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = s.tableoid AND e.objid = s.oid AND e.deptype = 'e')
UNION ALL
SELECT 'LARGE OBJECT', l.oid::text, l.lomowner, l.lomacl, 'L', true, 'LARGE OBJECT ' || l.oid,
       l.tableoid || ':' || l.oid
FROM pg_largeobject_metadata l
WHERE (SELECT whole FROM whole_database)
