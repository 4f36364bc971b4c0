-- The schemas a backup covers: every user schema, narrowed by the `schemas` and
-- `exclude-schemas` options ($INCLUDE and $EXCLUDE are text[] literals); and whether it
-- covers the whole database, with the objects that belong to no schema (casts, large
-- objects, foreign data wrappers and servers, publications, event triggers), which a
-- backup of chosen schemas leaves out, as pg_dump --schema does.
schemas AS (
    SELECT n.oid
    FROM pg_namespace n
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
      AND (cardinality($INCLUDE) = 0 OR n.nspname = ANY ($INCLUDE))
      AND NOT n.nspname = ANY ($EXCLUDE)
),
whole_database AS (
    SELECT cardinality($INCLUDE) = 0 AS whole
)
