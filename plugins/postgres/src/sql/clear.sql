-- Statements that make a database empty again, in this order: event triggers first (they
-- would fire while the rest goes), publications, large objects, casts, foreign servers
-- and wrappers, extensions, every user schema; then `public` comes back as a new
-- database has it.
SELECT statement FROM (
    SELECT 1 AS step, evtname::text AS name, format('DROP EVENT TRIGGER IF EXISTS %I', evtname) AS statement
    FROM pg_event_trigger
    UNION ALL
    SELECT 2, pubname, format('DROP PUBLICATION IF EXISTS %I', pubname) FROM pg_publication
    UNION ALL
    SELECT 3, '', 'SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata'
    WHERE EXISTS (SELECT FROM pg_largeobject_metadata)
    UNION ALL
    SELECT 4, lpad(oid::text, 10, '0'),
           format('DROP CAST IF EXISTS (%s AS %s) CASCADE', format_type(castsource, NULL), format_type(casttarget, NULL))
    FROM pg_cast c WHERE oid >= 16384
      -- A range type's multirange casts and an extension's casts go with their owner.
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = c.tableoid AND d.objid = c.oid AND d.deptype IN ('i', 'e'))
    UNION ALL
    SELECT 5, srvname, format('DROP SERVER IF EXISTS %I CASCADE', srvname) FROM pg_foreign_server s
    WHERE NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = s.tableoid AND d.objid = s.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 6, fdwname, format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', fdwname) FROM pg_foreign_data_wrapper w
    -- postgres_fdw and its kind go with their extension.
    WHERE NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = w.tableoid AND d.objid = w.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 7, extname, format('DROP EXTENSION IF EXISTS %I CASCADE', extname) FROM pg_extension WHERE extname <> 'plpgsql'
    UNION ALL
    SELECT 8, nspname, format('DROP SCHEMA IF EXISTS %I CASCADE', nspname)
    FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
    UNION ALL
    SELECT 9, '1', 'CREATE SCHEMA public AUTHORIZATION pg_database_owner'
    UNION ALL
    SELECT 9, '2', 'GRANT USAGE ON SCHEMA public TO PUBLIC'
    UNION ALL
    SELECT 9, '3', 'COMMENT ON SCHEMA public IS ''standard public schema'''
) clear
ORDER BY step, name
