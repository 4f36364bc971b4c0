-- Ownership and privileges, after everything else: owners, then the GRANT and REVOKE
-- statements of `changes` (acl_changes.sql), one entry per object: revokes first, then
-- the owner's grants, then grants by others (who may hold their grant option from the
-- owner's).
-- Columns: rank, kind, name, statement, key (as post_data.sql).
SELECT 10, 'OWNER', o.keyword || ' ' || o.name, format('ALTER %s %s OWNER TO %I;', o.keyword, o.name, pg_get_userbyid(o.owner)),
       o.key
FROM objects o
WHERE o.own_owner
UNION ALL
SELECT g.rank, g.kind, g.name,
       -- PostgreSQL before 16 takes GRANTED BY only for the current user, so a grant by
       -- someone else is made as that role (pg_dump uses SET SESSION AUTHORIZATION).
       string_agg(format('%s%s%s %s ON %s %s %s%s;%s',
                         CASE WHEN g.granted_by IS NOT NULL THEN format('SET ROLE %I; ', pg_get_userbyid(g.granted_by)) ELSE '' END,
                         g.prefix, g.verb, g.privileges, g.target, CASE g.verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END,
                         CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                         CASE WHEN g.grantable AND g.verb = 'GRANT' THEN ' WITH GRANT OPTION' ELSE '' END,
                         CASE WHEN g.granted_by IS NOT NULL THEN ' RESET ROLE;' ELSE '' END),
                  E'\n' ORDER BY g.verb DESC, g.granted_by NULLS FIRST, g.grantee, g.grantable),
       min(g.key)
FROM (
    SELECT rank, kind, name, prefix, verb, string_agg(privilege, ', ' ORDER BY privilege) AS privileges, target,
           grantee, grantable, granted_by, key
    FROM changes
    GROUP BY rank, kind, name, prefix, verb, target, grantee, grantable, granted_by, key
) g
GROUP BY g.rank, g.kind, g.name
ORDER BY 1, 3
