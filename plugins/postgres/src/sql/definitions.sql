-- Objects that define how values sort, compare, combine, convert and are searched:
-- collations, operators, operator families and classes, aggregates, casts, text search
-- parsers, templates, dictionaries and configurations. Rows as in objects.sql, which
-- this query extends (same columns, same keys). Casts belong to no schema: they come
-- with a backup of the whole database, as in pg_dump.
, family_members AS (
    -- The operators and support functions of operator families, as a class or family
    -- lists them; pg_depend says whether one belongs to a class (internal) or only to
    -- its family.
    SELECT o.tableoid AS catalog, o.oid, o.amopfamily AS family, 1 AS kind, o.amopstrategy AS number,
           format('OPERATOR %s %s', o.amopstrategy, o.amopopr::regoperator::text)
           || coalesce((SELECT format(' FOR ORDER BY %I.%I', sn.nspname, sf.opfname)
                        FROM pg_opfamily sf JOIN pg_namespace sn ON sn.oid = sf.opfnamespace
                        WHERE o.amoppurpose = 'o' AND sf.oid = o.amopsortfamily), '') AS item
    FROM pg_amop o
    UNION ALL
    SELECT p.tableoid, p.oid, p.amprocfamily, 2, p.amprocnum,
           format('FUNCTION %s (%s, %s) %s', p.amprocnum, format_type(p.amproclefttype, NULL),
                  format_type(p.amprocrighttype, NULL), p.amproc::regprocedure::text)
    FROM pg_amproc p
)
SELECT c.tableoid || ':' || c.oid, 'COLLATION', format('%I.%I', n.nspname, c.collname),
       format('CREATE COLLATION %I.%I (provider = %s%s, %s%s);', n.nspname, c.collname,
              CASE c.collprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END,
              CASE WHEN c.collisdeterministic THEN '' ELSE ', deterministic = false' END,
              -- The ICU (and 17's builtin) locale is colliculocale in 15 and 16, colllocale
              -- from 17; ICU rules came with 16. Read through jsonb, one query serves all.
              CASE WHEN c.collprovider IN ('i', 'b')
                   THEN format('locale = %L', coalesce(to_jsonb(c) ->> 'colllocale', to_jsonb(c) ->> 'colliculocale'))
                   WHEN c.collcollate = c.collctype THEN format('locale = %L', c.collcollate)
                   ELSE format('lc_collate = %L, lc_ctype = %L', c.collcollate, c.collctype) END,
              coalesce(', rules = ' || quote_literal(to_jsonb(c) ->> 'collicurules'), '')),
       25, NULL
FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
-- A commutator or negator that does not exist yet is created as a shell and completed
-- by its own CREATE OPERATOR, so operators need no order among themselves.
SELECT o.tableoid || ':' || o.oid, 'OPERATOR', o.oid::regoperator::text,
       format('CREATE OPERATOR %I.%s (%s);', n.nspname, o.oprname, concat_ws(', ',
              'FUNCTION = ' || o.oprcode::regproc::text,
              'LEFTARG = ' || format_type(nullif(o.oprleft, 0), NULL),
              'RIGHTARG = ' || format_type(nullif(o.oprright, 0), NULL),
              'COMMUTATOR = ' || (SELECT format('OPERATOR(%I.%s)', cn.nspname, co.oprname)
                                  FROM pg_operator co JOIN pg_namespace cn ON cn.oid = co.oprnamespace WHERE co.oid = o.oprcom),
              'NEGATOR = ' || (SELECT format('OPERATOR(%I.%s)', nn.nspname, no.oprname)
                               FROM pg_operator no JOIN pg_namespace nn ON nn.oid = no.oprnamespace WHERE no.oid = o.oprnegate),
              'RESTRICT = ' || nullif(o.oprrest, 0)::regproc::text,
              'JOIN = ' || nullif(o.oprjoin, 0)::regproc::text,
              CASE WHEN o.oprcanhash THEN 'HASHES' END,
              CASE WHEN o.oprcanmerge THEN 'MERGES' END)),
       42, NULL
FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
WHERE n.oid IN (SELECT oid FROM schemas) AND o.oprcode <> 0
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = o.tableoid AND e.objid = o.oid AND e.deptype = 'e')
UNION ALL
-- A family, with its members that belong to none of its classes.
SELECT f.tableoid || ':' || f.oid, 'OPERATOR FAMILY', format('%I.%I USING %I', n.nspname, f.opfname, am.amname),
       format('CREATE OPERATOR FAMILY %I.%I USING %I;', n.nspname, f.opfname, am.amname)
       -- format() turns NULL into '': the concatenation is what drops an empty ADD.
       || coalesce(format(E'\nALTER OPERATOR FAMILY %I.%I USING %I ADD\n    ', n.nspname, f.opfname, am.amname)
                   || (SELECT string_agg(m.item, E',\n    ' ORDER BY m.kind, m.number, m.item)
                       FROM family_members m
                       WHERE m.family = f.oid AND NOT EXISTS (
                             SELECT FROM pg_depend d WHERE d.classid = m.catalog AND d.objid = m.oid
                                                       AND d.refclassid = 'pg_opclass'::regclass AND d.deptype = 'i'))
                   || ';',
                   ''),
       43, NULL
FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = f.tableoid AND e.objid = f.oid AND e.deptype = 'e')
UNION ALL
SELECT c.tableoid || ':' || c.oid, 'OPERATOR CLASS', format('%I.%I USING %I', n.nspname, c.opcname, am.amname),
       format(E'CREATE OPERATOR CLASS %I.%I\n    %sFOR TYPE %s USING %I FAMILY %I.%I AS\n    %s;',
              n.nspname, c.opcname, CASE WHEN c.opcdefault THEN 'DEFAULT ' ELSE '' END, format_type(c.opcintype, NULL),
              am.amname, fn.nspname, f.opfname,
              -- A class says at least one thing; STORAGE of its own type says nothing new.
              coalesce(concat_ws(E',\n    ',
                                 (SELECT string_agg(m.item, E',\n    ' ORDER BY m.kind, m.number, m.item)
                                  FROM family_members m JOIN pg_depend d ON d.classid = m.catalog AND d.objid = m.oid
                                  WHERE d.refclassid = c.tableoid AND d.refobjid = c.oid AND d.deptype = 'i'),
                                 'STORAGE ' || format_type(nullif(c.opckeytype, 0), NULL)),
                       'STORAGE ' || format_type(c.opcintype, NULL))),
       44, NULL
FROM pg_opclass c
JOIN pg_namespace n ON n.oid = c.opcnamespace
JOIN pg_am am ON am.oid = c.opcmethod
JOIN pg_opfamily f ON f.oid = c.opcfamily
JOIN pg_namespace fn ON fn.oid = f.opfnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
UNION ALL
SELECT p.tableoid || ':' || p.oid, 'AGGREGATE',
       format('%I.%I(%s)', n.nspname, p.proname, CASE WHEN p.pronargs = 0 THEN '*' ELSE pg_get_function_identity_arguments(p.oid) END),
       format(E'CREATE AGGREGATE %I.%I(%s) (\n    %s\n);', n.nspname, p.proname,
              CASE WHEN p.pronargs = 0 THEN '*' ELSE pg_get_function_arguments(p.oid) END,
              concat_ws(E',\n    ',
                        'SFUNC = ' || a.aggtransfn::regproc::text,
                        'STYPE = ' || format_type(a.aggtranstype, NULL),
                        'SSPACE = ' || nullif(a.aggtransspace, 0),
                        'FINALFUNC = ' || nullif(a.aggfinalfn, 0)::regproc::text,
                        CASE WHEN a.aggfinalextra THEN 'FINALFUNC_EXTRA' END,
                        CASE WHEN a.aggfinalfn <> 0 THEN 'FINALFUNC_MODIFY = ' || CASE a.aggfinalmodify WHEN 'r' THEN 'READ_ONLY' WHEN 's' THEN 'SHAREABLE' ELSE 'READ_WRITE' END END,
                        'COMBINEFUNC = ' || nullif(a.aggcombinefn, 0)::regproc::text,
                        'SERIALFUNC = ' || nullif(a.aggserialfn, 0)::regproc::text,
                        'DESERIALFUNC = ' || nullif(a.aggdeserialfn, 0)::regproc::text,
                        'INITCOND = ' || quote_literal(a.agginitval),
                        'MSFUNC = ' || nullif(a.aggmtransfn, 0)::regproc::text,
                        'MINVFUNC = ' || nullif(a.aggminvtransfn, 0)::regproc::text,
                        'MSTYPE = ' || format_type(nullif(a.aggmtranstype, 0), NULL),
                        'MSSPACE = ' || nullif(a.aggmtransspace, 0),
                        'MFINALFUNC = ' || nullif(a.aggmfinalfn, 0)::regproc::text,
                        CASE WHEN a.aggmfinalextra THEN 'MFINALFUNC_EXTRA' END,
                        CASE WHEN a.aggmfinalfn <> 0 THEN 'MFINALFUNC_MODIFY = ' || CASE a.aggmfinalmodify WHEN 'r' THEN 'READ_ONLY' WHEN 's' THEN 'SHAREABLE' ELSE 'READ_WRITE' END END,
                        'MINITCOND = ' || quote_literal(a.aggminitval),
                        'SORTOP = ' || (SELECT format('OPERATOR(%I.%s)', sn.nspname, so.oprname)
                                        FROM pg_operator so JOIN pg_namespace sn ON sn.oid = so.oprnamespace
                                        WHERE so.oid = a.aggsortop),
                        CASE p.proparallel WHEN 's' THEN 'PARALLEL = SAFE' WHEN 'r' THEN 'PARALLEL = RESTRICTED' END,
                        CASE WHEN a.aggkind = 'h' THEN 'HYPOTHETICAL' END)),
       45, NULL
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_aggregate a ON a.aggfnoid = p.oid
WHERE n.oid IN (SELECT oid FROM schemas) AND p.prokind = 'a'
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = p.tableoid AND e.objid = p.oid AND e.deptype = 'e')
UNION ALL
SELECT c.tableoid || ':' || c.oid, 'CAST', format('(%s AS %s)', format_type(c.castsource, NULL), format_type(c.casttarget, NULL)),
       format('CREATE CAST (%s AS %s) %s%s;', format_type(c.castsource, NULL), format_type(c.casttarget, NULL),
              CASE c.castmethod WHEN 'f' THEN 'WITH FUNCTION ' || c.castfunc::regprocedure::text
                                WHEN 'i' THEN 'WITH INOUT' ELSE 'WITHOUT FUNCTION' END,
              CASE c.castcontext WHEN 'a' THEN ' AS ASSIGNMENT' WHEN 'i' THEN ' AS IMPLICIT' ELSE '' END),
       46, NULL
FROM pg_cast c
WHERE c.oid >= 16384 AND (SELECT whole FROM whole_database)
  -- A range type creates its multirange casts itself (internal dependency).
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype IN ('e', 'i'))
UNION ALL
SELECT p.tableoid || ':' || p.oid, 'TEXT SEARCH PARSER', format('%I.%I', n.nspname, p.prsname),
       format('CREATE TEXT SEARCH PARSER %I.%I (START = %s, GETTOKEN = %s, END = %s, LEXTYPES = %s%s);', n.nspname, p.prsname,
              p.prsstart::regproc::text, p.prstoken::regproc::text, p.prsend::regproc::text, p.prslextype::regproc::text,
              coalesce(', HEADLINE = ' || nullif(p.prsheadline, 0)::regproc::text, '')),
       47, NULL
FROM pg_ts_parser p JOIN pg_namespace n ON n.oid = p.prsnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = p.tableoid AND e.objid = p.oid AND e.deptype = 'e')
UNION ALL
SELECT t.tableoid || ':' || t.oid, 'TEXT SEARCH TEMPLATE', format('%I.%I', n.nspname, t.tmplname),
       format('CREATE TEXT SEARCH TEMPLATE %I.%I (%sLEXIZE = %s);', n.nspname, t.tmplname,
              coalesce('INIT = ' || nullif(t.tmplinit, 0)::regproc::text || ', ', ''), t.tmpllexize::regproc::text),
       47, NULL
FROM pg_ts_template t JOIN pg_namespace n ON n.oid = t.tmplnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = t.tableoid AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT d.tableoid || ':' || d.oid, 'TEXT SEARCH DICTIONARY', format('%I.%I', n.nspname, d.dictname),
       format('CREATE TEXT SEARCH DICTIONARY %I.%I (TEMPLATE = %I.%I%s);', n.nspname, d.dictname, tn.nspname, t.tmplname,
              coalesce(', ' || d.dictinitoption, '')),
       48, NULL
FROM pg_ts_dict d
JOIN pg_namespace n ON n.oid = d.dictnamespace
JOIN pg_ts_template t ON t.oid = d.dicttemplate
JOIN pg_namespace tn ON tn.oid = t.tmplnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = d.tableoid AND e.objid = d.oid AND e.deptype = 'e')
UNION ALL
SELECT c.tableoid || ':' || c.oid, 'TEXT SEARCH CONFIGURATION', format('%I.%I', n.nspname, c.cfgname),
       format('CREATE TEXT SEARCH CONFIGURATION %I.%I (PARSER = %I.%I);', n.nspname, c.cfgname, pn.nspname, p.prsname)
       || coalesce((SELECT string_agg(format(E'\nALTER TEXT SEARCH CONFIGURATION %I.%I ADD MAPPING FOR %I WITH %s;',
                                             n.nspname, c.cfgname, m.alias, m.dictionaries), '' ORDER BY m.tokid)
                    FROM (SELECT t.tokid, t.alias, string_agg(cm.mapdict::regdictionary::text, ', ' ORDER BY cm.mapseqno) AS dictionaries
                          FROM pg_ts_config_map cm JOIN ts_token_type(c.cfgparser) t ON t.tokid = cm.maptokentype
                          WHERE cm.mapcfg = c.oid
                          GROUP BY t.tokid, t.alias) m), ''),
       49, NULL
FROM pg_ts_config c
JOIN pg_namespace n ON n.oid = c.cfgnamespace
JOIN pg_ts_parser p ON p.oid = c.cfgparser
JOIN pg_namespace pn ON pn.oid = p.prsnamespace
WHERE n.oid IN (SELECT oid FROM schemas)
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = c.tableoid AND e.objid = c.oid AND e.deptype = 'e')
