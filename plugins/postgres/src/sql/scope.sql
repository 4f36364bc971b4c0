-- Where each object a statement is about belongs, for restores of chosen schemas or
-- tables: its own schema (a schema is its own), and for a relation and what is part of
-- one (column defaults, constraints, indexes, triggers, policies, rules, extended
-- statistics, a sequence owned by a column or an identity sequence) the relation,
-- qualified (a sequence may live in another schema than the table that owns it).
-- $KEYS lists the objects as 'catalog oid:object oid'. Objects of no schema (casts,
-- extensions, foreign data wrappers and servers, user mappings, publications, event
-- triggers, large objects) get neither.
-- Columns: key, schema, relation (schema.name).
SELECT k.key, coalesce(s.schema, r.schema), r.schema || '.' || r.relation
FROM unnest($KEYS) k (key)
CROSS JOIN LATERAL (SELECT split_part(k.key, ':', 1)::oid AS classid, split_part(k.key, ':', 2)::oid AS objid) o
CROSS JOIN LATERAL (
    SELECT CASE o.classid
        WHEN 'pg_class'::regclass THEN coalesce(
            (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = o.objid),
            (SELECT d.refobjid FROM pg_depend d
             WHERE d.classid = o.classid AND d.objid = o.objid AND d.refclassid = o.classid AND d.refobjsubid > 0
               AND d.deptype IN ('a', 'i') LIMIT 1),
            (SELECT c.oid FROM pg_class c WHERE c.oid = o.objid AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')))
        WHEN 'pg_constraint'::regclass THEN (SELECT nullif(k.conrelid, 0) FROM pg_constraint k WHERE k.oid = o.objid)
        WHEN 'pg_trigger'::regclass THEN (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = o.objid)
        WHEN 'pg_policy'::regclass THEN (SELECT p.polrelid FROM pg_policy p WHERE p.oid = o.objid)
        WHEN 'pg_rewrite'::regclass THEN (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = o.objid)
        WHEN 'pg_attrdef'::regclass THEN (SELECT d.adrelid FROM pg_attrdef d WHERE d.oid = o.objid)
        WHEN 'pg_statistic_ext'::regclass THEN (SELECT x.stxrelid FROM pg_statistic_ext x WHERE x.oid = o.objid)
    END AS relid
) owner
LEFT JOIN LATERAL (
    SELECT n.nspname AS schema, c.relname AS relation
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = owner.relid
) r ON true
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN o.classid = 'pg_namespace'::regclass THEN (SELECT n.nspname FROM pg_namespace n WHERE n.oid = o.objid)
        -- pg_identify_object gives no schema for default privileges.
        WHEN o.classid = 'pg_default_acl'::regclass
            THEN (SELECT n.nspname FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
                  WHERE d.oid = o.objid)
        WHEN o.classid IN ('pg_type'::regclass, 'pg_proc'::regclass, 'pg_class'::regclass, 'pg_constraint'::regclass,
                           'pg_collation'::regclass, 'pg_operator'::regclass, 'pg_opclass'::regclass,
                           'pg_opfamily'::regclass, 'pg_ts_parser'::regclass, 'pg_ts_template'::regclass,
                           'pg_ts_dict'::regclass, 'pg_ts_config'::regclass, 'pg_statistic_ext'::regclass)
            THEN (pg_identify_object(o.classid, o.objid, 0)).schema
    END AS schema
) s
