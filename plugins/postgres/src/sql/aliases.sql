-- Parts that pg_depend names separately but that are created with another object:
-- extension members with their extension, row types with their relation, arrays with
-- their element, multiranges with their range, defaults, view rules and CHECK
-- constraints with their table or domain, operator class and family members with their
-- class or family. Extension membership comes first and wins.
-- Indexes, triggers and the other constraints are created after the data, so their
-- dependencies do not order the schema objects.
SELECT d.classid || ':' || d.objid, 'pg_extension'::regclass::oid || ':' || d.refobjid
FROM pg_depend d WHERE d.deptype = 'e'
UNION ALL
SELECT t.tableoid || ':' || t.oid,
       CASE WHEN t.typrelid <> 0 THEN 'pg_class'::regclass::oid || ':' || t.typrelid
            WHEN r.rngtypid IS NOT NULL THEN t.tableoid || ':' || r.rngtypid
            ELSE t.tableoid || ':' || t.typelem END
FROM pg_type t LEFT JOIN pg_range r ON r.rngmultitypid = t.oid
WHERE t.oid >= 16384 AND (t.typrelid <> 0 OR r.rngtypid IS NOT NULL
                          OR (t.typelem <> 0 AND t.typsubscript = 'array_subscript_handler'::regproc))
UNION ALL
SELECT d.tableoid || ':' || d.oid, 'pg_class'::regclass::oid || ':' || d.adrelid FROM pg_attrdef d
UNION ALL
SELECT r.tableoid || ':' || r.oid, 'pg_class'::regclass::oid || ':' || r.ev_class FROM pg_rewrite r WHERE r.oid >= 16384
UNION ALL
SELECT k.tableoid || ':' || k.oid,
       CASE WHEN k.contypid <> 0 THEN 'pg_type'::regclass::oid || ':' || k.contypid
            ELSE 'pg_class'::regclass::oid || ':' || k.conrelid END
FROM pg_constraint k WHERE k.oid >= 16384 AND k.contype = 'c'
UNION ALL
-- The members of an operator class are created with it, loose members with their family.
SELECT d.classid || ':' || d.objid, d.refclassid || ':' || d.refobjid
FROM pg_depend d
WHERE d.classid IN ('pg_amop'::regclass, 'pg_amproc'::regclass) AND d.objid >= 16384
  AND d.refclassid IN ('pg_opclass'::regclass, 'pg_opfamily'::regclass) AND d.deptype IN ('i', 'a')
