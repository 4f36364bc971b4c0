-- Event triggers, the very last statements of a restore (after owners and privileges),
-- so that none fires while the restore runs DDL. Each with its state and comment, then
-- its owner. They belong to no schema: they come with a backup of the whole database.
-- Columns: rank, kind, name, statement, key (as post_data.sql).
SELECT 1, 'EVENT TRIGGER', quote_ident(t.evtname),
       format('CREATE EVENT TRIGGER %I ON %I%s EXECUTE FUNCTION %s();', t.evtname, t.evtevent,
              coalesce(' WHEN TAG IN (' || (SELECT string_agg(quote_literal(tag), ', ') FROM unnest(t.evttags) tag) || ')', ''),
              t.evtfoid::regproc::text)
       || CASE t.evtenabled WHEN 'D' THEN format(E'\nALTER EVENT TRIGGER %I DISABLE;', t.evtname)
                            WHEN 'R' THEN format(E'\nALTER EVENT TRIGGER %I ENABLE REPLICA;', t.evtname)
                            WHEN 'A' THEN format(E'\nALTER EVENT TRIGGER %I ENABLE ALWAYS;', t.evtname)
                            ELSE '' END
       || coalesce((SELECT format(E'\nCOMMENT ON EVENT TRIGGER %I IS %L;', t.evtname, d.description)
                    FROM pg_description d WHERE d.classoid = t.tableoid AND d.objoid = t.oid), ''),
       t.tableoid || ':' || t.oid
FROM pg_event_trigger t
WHERE (SELECT whole FROM whole_database)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT 2, 'OWNER', 'EVENT TRIGGER ' || quote_ident(t.evtname),
       format('ALTER EVENT TRIGGER %I OWNER TO %I;', t.evtname, pg_get_userbyid(t.evtowner)),
       t.tableoid || ':' || t.oid
FROM pg_event_trigger t
WHERE (SELECT whole FROM whole_database)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
ORDER BY 1, 3
