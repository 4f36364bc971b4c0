-- The roles a restore needs, as (what for, role): 'owner' for OWNER TO, 'privileges'
-- for the GRANT/REVOKE statements (acl_changes.sql), 'named' for what names roles
-- whatever the restore leaves out: row security policies and user mappings.
SELECT 'owner', pg_get_userbyid(o.owner) FROM objects o WHERE o.own_owner
UNION
SELECT 'owner', pg_get_userbyid(t.evtowner) FROM pg_event_trigger t WHERE (SELECT whole FROM whole_database)
UNION
SELECT 'privileges', pg_get_userbyid(r)
FROM changes CROSS JOIN LATERAL (VALUES (grantee), (granted_by), (for_role)) v (r)
WHERE r IS NOT NULL AND r <> 0
UNION
SELECT 'named', pg_get_userbyid(r)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid CROSS JOIN LATERAL unnest(p.polroles) r
WHERE c.relnamespace IN (SELECT oid FROM schemas) AND r <> 0
UNION
SELECT 'named', m.usename FROM pg_user_mappings m WHERE m.umuser <> 0 AND (SELECT whole FROM whole_database)
ORDER BY 1, 2
