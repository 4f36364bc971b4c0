-- What depends on what, as keys like those of objects.sql. A sequence's automatic
-- dependency on the column that owns it is left out: the column's default needs the
-- sequence first, and ownership is restored after the tables (post_data.sql).
SELECT d.classid || ':' || d.objid, d.refclassid || ':' || d.refobjid
FROM pg_depend d
WHERE d.deptype IN ('n', 'a', 'i') AND d.objid >= 16384
  AND NOT (d.classid = 'pg_class'::regclass AND d.deptype = 'a'
           AND EXISTS (SELECT FROM pg_class s WHERE s.oid = d.objid AND s.relkind = 'S'))
