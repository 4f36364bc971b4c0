-- Foreign data wrappers, foreign servers and user mappings, which foreign tables
-- (objects.sql) use. Rows as in objects.sql. They belong to no schema: they come with a
-- backup of the whole database. A user mapping's options may hold a password: the
-- backup carries it, as pg_dump does.
SELECT w.tableoid || ':' || w.oid, 'FOREIGN DATA WRAPPER', quote_ident(w.fdwname),
       format('CREATE FOREIGN DATA WRAPPER %I%s%s%s;', w.fdwname,
              coalesce(' HANDLER ' || nullif(w.fdwhandler, 0)::regproc::text, ''),
              coalesce(' VALIDATOR ' || nullif(w.fdwvalidator, 0)::regproc::text, ''),
              coalesce(' ' || (SELECT 'OPTIONS (' || string_agg(format('%I %L', o.option_name, o.option_value), ', ') || ')'
                              FROM pg_options_to_table(w.fdwoptions) o), '')),
       55, NULL
FROM pg_foreign_data_wrapper w
WHERE (SELECT whole FROM whole_database)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = w.tableoid AND e.objid = w.oid AND e.deptype = 'e')
UNION ALL
SELECT s.tableoid || ':' || s.oid, 'SERVER', quote_ident(s.srvname),
       format('CREATE SERVER %I%s%s FOREIGN DATA WRAPPER %I%s;', s.srvname,
              coalesce(' TYPE ' || quote_literal(s.srvtype), ''), coalesce(' VERSION ' || quote_literal(s.srvversion), ''),
              w.fdwname, coalesce(' ' || (SELECT 'OPTIONS (' || string_agg(format('%I %L', o.option_name, o.option_value), ', ') || ')'
                              FROM pg_options_to_table(s.srvoptions) o), '')),
       56, NULL
FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
WHERE (SELECT whole FROM whole_database)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = s.tableoid AND e.objid = s.oid AND e.deptype = 'e')
UNION ALL
SELECT 'pg_user_mapping'::regclass::oid || ':' || m.umid, 'USER MAPPING',
       format('FOR %s SERVER %I', CASE WHEN m.umuser = 0 THEN 'PUBLIC' ELSE quote_ident(m.usename) END, m.srvname),
       format('CREATE USER MAPPING FOR %s SERVER %I%s;', CASE WHEN m.umuser = 0 THEN 'PUBLIC' ELSE quote_ident(m.usename) END,
              m.srvname, coalesce(' ' || (SELECT 'OPTIONS (' || string_agg(format('%I %L', o.option_name, o.option_value), ', ') || ')'
                              FROM pg_options_to_table(m.umoptions) o), '')),
       57, NULL
FROM pg_user_mappings m
WHERE (SELECT whole FROM whole_database)
