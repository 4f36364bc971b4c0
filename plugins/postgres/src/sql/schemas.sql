-- The schemas a backup covers: every user schema, narrowed by the `schemas` and
-- `exclude-schemas` options ($INCLUDE and $EXCLUDE are text[] literals).
SELECT n.oid
FROM pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND (cardinality($INCLUDE) = 0 OR n.nspname = ANY ($INCLUDE))
  AND NOT n.nspname = ANY ($EXCLUDE)
