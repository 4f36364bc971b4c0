-- Tables whose rows are copied: name, quoted name, quoted column list (generated
-- columns are computed again on restore), key (catalog oid:object oid).
SELECT n.nspname || '.' || c.relname, format('%I.%I', n.nspname, c.relname),
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
        FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
       c.tableoid || ':' || c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind = 'r'
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
ORDER BY n.nspname, c.relname
