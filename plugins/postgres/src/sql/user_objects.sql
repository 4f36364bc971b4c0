-- User objects in the connected database; a database fresh from template1 has none.
WITH user_schemas AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
)
SELECT (SELECT count(*) FROM user_schemas WHERE nspname <> 'public')
     + (SELECT count(*) FROM pg_class WHERE relnamespace IN (SELECT oid FROM user_schemas))
     + (SELECT count(*) FROM pg_type WHERE typnamespace IN (SELECT oid FROM user_schemas))
     + (SELECT count(*) FROM pg_proc WHERE pronamespace IN (SELECT oid FROM user_schemas))
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
     + (SELECT count(*) FROM pg_largeobject_metadata)
     + (SELECT count(*) FROM pg_publication)
     + (SELECT count(*) FROM pg_event_trigger)
     + (SELECT count(*) FROM pg_foreign_data_wrapper)
     + (SELECT count(*) FROM pg_foreign_server)
     + (SELECT count(*) FROM pg_cast WHERE oid >= 16384)
