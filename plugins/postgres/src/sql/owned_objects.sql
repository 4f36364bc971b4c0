-- The objects a backup creates that have an owner and privileges: keyword (as in ALTER
-- ... OWNER TO), name (qualified and quoted), owner, ACL, ACL kind (as acldefault takes
-- it), and whether the object has its own owner (a sequence owned by a column, or an
-- identity sequence, follows its table).
SELECT 'SCHEMA' AS keyword, quote_ident(n.nspname) AS name, n.nspowner AS owner, n.nspacl AS acl,
       'n'::"char" AS acl_kind, true AS own_owner
FROM pg_namespace n
WHERE n.oid IN (SELECT oid FROM schemas)
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname), t.typowner, t.typacl,
       'T', true
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE n.oid IN (SELECT oid FROM schemas)
  AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.oid::regprocedure::text, p.proowner, p.proacl,
       'f', true
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = p.tableoid AND e.objid = p.oid AND e.deptype IN ('e', 'i'))
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
       format('%I.%I', n.nspname, c.relname), c.relowner, c.relacl,
       CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
       NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = c.tableoid AND d.objid = c.oid AND d.refclassid = c.tableoid
                                             AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
