-- Every privilege a restore grants or revokes, one row each: rank, kind and name of the
-- statement it goes into, the statement's prefix (for default privileges), verb, the
-- privilege (with its column for column privileges), ON what, grantee (0 = PUBLIC),
-- grant option, the grantor when it is not the owner, the role whose default privileges
-- change, and the key (catalog oid:object oid) of the object. An object's
-- privileges are the difference between its ACL and the default ACL of its owner;
-- a column's are its ACL; default privileges replace acldefault globally and add to
-- nothing per schema. (aclexplode refuses an empty ACL: nullif makes it NULL, no rows.)
SELECT 11 AS rank, 'ACL' AS kind, o.keyword || ' ' || o.name AS name, '' AS prefix, a.verb, a.privilege_type AS privilege,
       o.acl_target AS target,
       a.grantee, a.is_grantable AS grantable, nullif(a.grantor, o.owner) AS granted_by, NULL::oid AS for_role,
       o.key
FROM objects o
CROSS JOIN LATERAL (
    (SELECT 'REVOKE' AS verb, * FROM aclexplode(acldefault(o.acl_kind, o.owner))
     EXCEPT SELECT 'REVOKE', * FROM aclexplode(nullif(o.acl, '{}')))
    UNION ALL
    (SELECT 'GRANT', * FROM aclexplode(nullif(o.acl, '{}'))
     EXCEPT SELECT 'GRANT', * FROM aclexplode(acldefault(o.acl_kind, o.owner)))
) a
WHERE o.acl IS NOT NULL
UNION ALL
SELECT 11, 'ACL', format('COLUMN %I.%I.%I', n.nspname, c.relname, att.attname), '', 'GRANT',
       format('%s (%I)', a.privilege_type, att.attname), format('TABLE %I.%I', n.nspname, c.relname),
       a.grantee, a.is_grantable, nullif(a.grantor, c.relowner), NULL, c.tableoid || ':' || c.oid
FROM pg_attribute att
JOIN pg_class c ON c.oid = att.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(nullif(att.attacl, '{}')) a
WHERE n.oid IN (SELECT oid FROM schemas) AND c.relkind IN ('r', 'p', 'v', 'm') AND att.attnum > 0
  AND NOT att.attisdropped AND att.attacl IS NOT NULL
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT 12, 'DEFAULT ACL', k.scope || ' ON ' || k.objects, 'ALTER DEFAULT PRIVILEGES ' || k.scope || ' ', a.verb,
       a.privilege_type, k.objects, a.grantee, a.is_grantable, NULL, d.defaclrole, d.tableoid || ':' || d.oid
FROM pg_default_acl d
LEFT JOIN pg_namespace dn ON dn.oid = d.defaclnamespace
CROSS JOIN LATERAL (
    SELECT CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                                WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END AS objects,
           format('FOR ROLE %I', pg_get_userbyid(d.defaclrole))
           || CASE WHEN d.defaclnamespace = 0 THEN '' ELSE ' IN SCHEMA ' || quote_ident(dn.nspname) END AS scope,
           CASE WHEN d.defaclnamespace <> 0 THEN NULL::aclitem[]
                ELSE acldefault(CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype END, d.defaclrole) END AS base
) k
CROSS JOIN LATERAL (
    (SELECT 'REVOKE' AS verb, * FROM aclexplode(k.base) EXCEPT SELECT 'REVOKE', * FROM aclexplode(nullif(d.defaclacl, '{}')))
    UNION ALL
    (SELECT 'GRANT', * FROM aclexplode(nullif(d.defaclacl, '{}')) EXCEPT SELECT 'GRANT', * FROM aclexplode(k.base))
) a
WHERE d.defaclnamespace = 0 OR d.defaclnamespace IN (SELECT oid FROM schemas)
