//! The PostgreSQL plugin against a real PostgreSQL 15 and a real S3 server: a schema
//! with every object kind round-trips exactly, the sections replay with psql alone, every
//! authentication method logs in, and each failure ends precisely without a backup.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use stowage_tests::postgres::{CLEARTEXT_USER, MD5_USER, PASSWORD, Postgres, SCRAM_USER, TRUST_USER, unrelated_ca};
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, command, run};
use stowage_tests::wait_until;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/postgres/rich.sql")
}

fn production_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/postgres/production.sql")
}

/// The cluster-wide roles that production.sql uses.
const PRODUCTION_ROLES: &str =
    "CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_user LOGIN; CREATE ROLE reporting NOLOGIN; CREATE ROLE etl NOLOGIN";

fn extended_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/postgres/extended.sql")
}

/// The cluster-wide roles that extended.sql uses.
const EXTENDED_ROLES: &str = "CREATE ROLE ext_owner NOLOGIN; CREATE ROLE ext_reader NOLOGIN";

fn password_env() -> Vec<(String, String)> {
    vec![("STOWAGE_DATABASE_PASSWORD".into(), PASSWORD.into())]
}

fn stowage(args: &[&str], env: &[(String, String)]) -> Run {
    run(args, env).expect("run stowage")
}

/// Asserts that database `copy` has the schema (`pg_dump --schema-only`, owners and
/// privileges included), the database's own properties and the rows of `original`;
/// returns the rows' summary.
fn assert_same_database(postgres: &Postgres, copy: &str, original: &str) -> String {
    assert_eq!(
        postgres.schema(copy).expect("schema of the copy"),
        postgres.schema(original).expect("schema"),
        "{copy}"
    );
    assert_eq!(
        postgres.properties(copy).expect("properties of the copy"),
        postgres.properties(original).expect("properties"),
        "{copy}"
    );
    let contents = postgres.contents(original).expect("contents");
    assert_eq!(postgres.contents(copy).expect("contents of the copy"), contents, "{copy}");
    contents
}

/// The data artifacts (one per table) among the uncompressed artifacts in `data`, in name order.
fn data_artifacts(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .expect("artifacts")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("data."))
        .collect();
    names.sort();
    names
}

/// The emergency path of docs/postgres.md, with psql alone: `roles.sql` first if asked,
/// then the sections of the uncompressed backup in `data` in their documented order, in
/// one transaction.
fn replay_by_hand(postgres: &Postgres, database: &str, data: &Path, with_roles: bool) {
    let mut scripts: Vec<Vec<String>> = Vec::new();
    if with_roles {
        scripts.push(vec!["roles.sql".into()]);
    }
    let sections = std::iter::once("pre-data.sql".to_owned())
        .chain(data_artifacts(data))
        .chain(["large-objects.sql".to_owned(), "post-data.sql".to_owned()]);
    scripts.push(sections.collect());
    for names in scripts {
        let script: Vec<u8> = names.iter().flat_map(|name| std::fs::read(data.join(name)).expect(name)).collect();
        if let Err(error) = postgres.psql_input(database, &["--single-transaction"], &script) {
            panic!("{names:?}: {error:#}");
        }
    }
}

/// The backups `stowage list` shows as complete.
fn complete_backups(repo: &str, env: &[(String, String)]) -> usize {
    let listed = stowage(&["list", "--repo", repo], env).ok().expect("list");
    listed.stdout.lines().filter(|line| line.contains(" complete ")).count()
}

#[test]
fn rich_database_round_trips_through_s3() {
    let postgres = Postgres::start().expect("postgres");
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let mut env = s3.env();
    env.extend(password_env());
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &fixture()).expect("load the rich schema");

    let repo = "s3://backups/postgres";
    let source = postgres.url(SCRAM_USER, "source");
    let backup = stowage(&["backup", "--plugin", "postgres", "--database", &source, "--repo", repo], &env);
    let backup = backup.ok().expect("backup");
    assert!(backup.stderr.contains("8 tables"), "{}", backup.stderr);

    // The target does not exist yet: the plugin creates it.
    let target = postgres.url(SCRAM_USER, "target");
    stowage(&["restore", "--plugin", "postgres", "--database", &target, "--repo", repo], &env).ok().expect("restore");
    let contents = assert_same_database(&postgres, "target", "source");
    assert!(contents.contains("shop.events_2025|5135|") && contents.contains("shop.order_stats|4|"), "{contents}");
    let next = postgres.psql("target", "SELECT nextval('shop.invoice_numbers'), nextval('shop.orders_id_seq')");
    assert_eq!(next.expect("sequences").trim(), "4249|3001", "sequences continue where the source was");

    // A second restore into the now non-empty target is refused and changes nothing...
    let refused = stowage(&["restore", "--plugin", "postgres", "--database", &target, "--repo", repo], &env);
    let refused = refused.failed().expect("restore into a non-empty database");
    assert!(refused.stderr.contains("target not empty: database \"target\" has"), "{}", refused.stderr);
    // ...unless the user asks to replace it.
    postgres.psql("target", "CREATE TABLE shop.extra (x int); DELETE FROM shop.orders").expect("change target");
    let replace = ["restore", "--replace", "--plugin", "postgres", "--database", &target, "--repo", repo];
    stowage(&replace, &env).ok().expect("restore --replace");
    assert_same_database(&postgres, "target", "source");
}

#[test]
fn a_production_shaped_database_restores_with_its_owners_privileges_policies_and_values() {
    let postgres = Postgres::start().expect("postgres");
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let mut env = s3.env();
    env.extend(password_env());
    postgres.psql("postgres", PRODUCTION_ROLES).expect("roles");
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &production_fixture()).expect("load the production-shaped schema");
    // The restore gives an existing target the source's settings (so values print alike),
    // connection limit, comment and privileges.
    postgres.psql("postgres", "CREATE DATABASE target").expect("create target");

    let repo = "s3://backups/production";
    let source = postgres.url(SCRAM_USER, "source");
    stowage(&["backup", "--plugin", "postgres", "--database", &source, "--repo", repo], &env).ok().expect("backup");
    let target = postgres.url(SCRAM_USER, "target");
    stowage(&["restore", "--plugin", "postgres", "--database", &target, "--repo", repo], &env).ok().expect("restore");

    let contents = assert_same_database(&postgres, "target", "source");
    assert!(contents.contains("legacy.no_columns|2|") && contents.contains("legacy.only_generated|1|"), "{contents}");
    let values = "SET intervalstyle = postgres; SELECT string_agg(coalesce(overdue::text, '-'), ',' ORDER BY id) FROM app.accounts";
    assert_eq!(
        postgres.psql("target", values).expect("intervals").trim(),
        "-1 days -02:00:00,1 year 2 mons -3 days +04:05:06.789,-3 days,-",
        "intervals keep their signs"
    );
    // Inheritance and the policies work as in the source.
    let parent_alone = "SELECT count(*) FROM ONLY legacy.events";
    assert_eq!(postgres.psql("target", parent_alone).expect("parent").trim(), "1");
    assert_eq!(postgres.psql("target", "SELECT count(*) FROM legacy.events").expect("parent").trim(), "3");
    let as_app_user = "SET ROLE app_user; SET app.region = 'eu'; SELECT count(*) FROM app.accounts";
    assert_eq!(postgres.psql("target", as_app_user).expect("policy").trim(), "2", "row security filters by region");

    // A cluster without the roles: the restore stops before any data and names them.
    let bare = Postgres::start().expect("second postgres");
    let elsewhere = bare.url(SCRAM_USER, "copy");
    let restore = ["restore", "--plugin", "postgres", "--database", &elsewhere, "--repo", repo];
    let refused = stowage(&restore, &env).failed().expect("restore without the roles");
    assert!(
        refused.stderr.contains("roles the backup uses as owners do not exist here: app_owner"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("no-owner=true"), "{}", refused.stderr);
    // The database the failed restore built (under its staging name) is gone again.
    assert!(
        refused.stderr.contains("database copy-stowage-restore, created by this restore, was dropped again"),
        "{}",
        refused.stderr
    );
    let databases = "SELECT count(*) FROM pg_database WHERE datname LIKE 'copy%'";
    assert_eq!(bare.psql("postgres", databases).expect("databases").trim(), "0");
    // Without owners and privileges, policies and user mappings still name their roles: checked first.
    let mut without = restore.to_vec();
    without.extend(["--option", "no-owner=true", "--option", "no-privileges=true"]);
    let refused = stowage(&without, &env).failed().expect("restore without the policies' roles");
    assert!(
        refused.stderr.contains(
            "roles the backup uses in row security policies and user mappings do not exist here: app_user, etl, reporting"
        ),
        "{}",
        refused.stderr
    );
    // With them it restores.
    bare.psql("postgres", "CREATE ROLE app_user; CREATE ROLE reporting; CREATE ROLE etl").expect("policy roles");
    stowage(&without, &env).ok().expect("restore with no-owner and no-privileges");
    assert_eq!(bare.contents("copy").expect("copy contents"), contents);
    let owners = "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname IN ('app', 'legacy')";
    assert_eq!(bare.psql("copy", owners).expect("owners").trim(), SCRAM_USER);
    let granted =
        "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee IN ('app_user', 'reporting')";
    assert_eq!(bare.psql("copy", granted).expect("grants").trim(), "0");
    // The database's settings came along, its privileges did not.
    let properties = bare.properties("copy").expect("properties");
    let properties = properties.trim();
    assert!(
        properties.starts_with("{IntervalStyle=sql_standard,\"app.motto=100% sure\"}|50|the shop's"),
        "{properties}"
    );
    assert!(properties.ends_with("|{PUBLIC=CONNECT,PUBLIC=TEMPORARY}"), "{properties}");
}

/// Roles with attributes, an expiry, a password, a comment, settings for every database
/// and for one, memberships with and without ADMIN (one in a predefined role), and a
/// name that needs quoting.
fn cluster_roles() -> String {
    format!(
        "CREATE ROLE app_owner LOGIN CREATEDB CONNECTION LIMIT 7 VALID UNTIL '2031-01-01 00:00:00+00' \
           PASSWORD '{PASSWORD}';
         COMMENT ON ROLE app_owner IS E'owns the app''s schema\\n  and its data';
         CREATE ROLE \"Report \"\"team\"\"\" NOLOGIN NOINHERIT;
         GRANT \"Report \"\"team\"\"\" TO app_owner WITH ADMIN OPTION;
         GRANT pg_read_all_data TO \"Report \"\"team\"\"\";
         ALTER ROLE app_owner SET search_path = app, \"$user\", public;
         ALTER ROLE app_owner SET work_mem = '64MB';
         CREATE DATABASE source;
         ALTER ROLE app_owner IN DATABASE source SET application_name = '50% off';
         ALTER ROLE \"Report \"\"team\"\"\" IN DATABASE source SET statement_timeout = '5s';"
    )
}

/// The roles of [`cluster_roles`] as `database`'s cluster has them: attributes, password
/// hash, comment, memberships, settings for every database and for `database`.
fn roles_of(postgres: &Postgres, database: &str) -> String {
    let roles = postgres.psql(
        database,
        "SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication, \
                r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil, r.rolpassword, shobj_description(r.oid, 'pg_authid'), \
                (SELECT string_agg(g.rolname || ':' || a.admin_option, ',' ORDER BY g.rolname) \
                 FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid WHERE a.member = r.oid), \
                (SELECT string_agg(CASE s.setdatabase WHEN 0 THEN '*' ELSE 'here' END || ':' \
                                   || array_to_string(s.setconfig, ';'), ' ' ORDER BY s.setdatabase) \
                 FROM pg_db_role_setting s WHERE s.setrole = r.oid \
                   AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))) \
         FROM pg_authid r WHERE r.rolname IN ('app_owner', 'Report \"team\"') ORDER BY 1",
    );
    roles.expect("roles")
}

#[test]
fn the_clusters_roles_travel_with_the_backup_and_a_restore_creates_those_missing() {
    let postgres = Postgres::start().expect("postgres");
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let mut env = s3.env();
    env.extend(password_env());
    postgres.psql("postgres", &cluster_roles()).expect("roles");
    postgres
        .psql(
            "source",
            "CREATE SCHEMA app AUTHORIZATION app_owner;
             CREATE TABLE app.accounts (id int PRIMARY KEY, name text);
             ALTER TABLE app.accounts OWNER TO app_owner;
             GRANT SELECT ON app.accounts TO \"Report \"\"team\"\"\";
             INSERT INTO app.accounts VALUES (1, 'ada'), (2, 'grace');",
        )
        .expect("source database");
    let roles = roles_of(&postgres, "source");
    assert!(roles.contains("SCRAM-SHA-256$") && roles.contains("here:application_name=50% off"), "{roles}");

    // Password hashes only for a superuser, with a message that says so.
    let (repo, without_passwords) = ("s3://backups/roles", "s3://backups/roles-without-passwords");
    let as_owner = postgres.url("app_owner", "source");
    let backup = ["backup", "--plugin", "postgres", "--database", &as_owner, "--repo", repo];
    let refused = stowage(&[&backup[..], &["--option", "roles=with-passwords"]].concat(), &env);
    let refused = refused.failed().expect("password hashes as a non-superuser");
    assert!(refused.stderr.contains("roles=with-passwords: reading password hashes (pg_authid) needs a superuser"));
    assert_eq!(complete_backups(repo, &env), 0);
    let source = postgres.url(SCRAM_USER, "source");
    let backup = ["backup", "--plugin", "postgres", "--database", &source, "--repo", repo];
    stowage(&[&backup[..], &["--option", "roles=with-passwords"]].concat(), &env).ok().expect("backup");

    // Another cluster, without the roles: refused with the way out named, then created.
    let target = Postgres::start().expect("target postgres");
    let copy = target.url(SCRAM_USER, "copy");
    let restore = ["restore", "--plugin", "postgres", "--database", &copy, "--repo", repo];
    let refused = stowage(&restore, &env).failed().expect("restore without the roles");
    assert!(refused.stderr.contains("create-roles=true"), "{}", refused.stderr);
    let restored = stowage(&[&restore[..], &["--option", "create-roles=true"]].concat(), &env);
    let restored = restored.ok().expect("restore creating the roles");
    assert!(restored.stdout.contains("roles: 2 created, 4 already present"), "{}", restored.stdout);
    assert_eq!(roles_of(&target, "copy"), roles, "the roles as the source cluster has them");
    assert_eq!(target.schema("copy").expect("schema"), postgres.schema("source").expect("schema"));
    assert_eq!(target.contents("copy").expect("contents"), postgres.contents("source").expect("contents"));

    // Roles a cluster has are left as they are: a backup without password hashes,
    // restored here, changes none (and sets their settings in the new database); into a
    // third cluster it creates them without.
    stowage(&["backup", "--plugin", "postgres", "--database", &source, "--repo", without_passwords], &env)
        .ok()
        .expect("backup without password hashes");
    let copy2 = target.url(SCRAM_USER, "copy2");
    let again = ["restore", "--plugin", "postgres", "--database", &copy2, "--repo", without_passwords];
    let again = stowage(&[&again[..], &["--option", "create-roles=true"]].concat(), &env);
    let again = again.ok().expect("restore");
    assert!(again.stdout.contains("roles: 0 created, 6 already present"), "{}", again.stdout);
    assert_eq!(roles_of(&target, "copy2"), roles, "existing roles unchanged");
    let bare = Postgres::start().expect("third postgres");
    let elsewhere = bare.url(SCRAM_USER, "copy");
    let third = ["restore", "--plugin", "postgres", "--database", &elsewhere, "--repo", without_passwords];
    stowage(&[&third[..], &["--option", "create-roles=true"]].concat(), &env).ok().expect("restore");
    let hash = roles.split('|').find(|field| field.starts_with("SCRAM-SHA-256$")).expect("hash");
    assert_eq!(roles_of(&bare, "copy"), roles.replace(hash, ""), "the same roles, without passwords");

    // The emergency path of docs/postgres.md: roles.sql, then the sections, with psql alone.
    let repo_dir = tempfile::tempdir().expect("repo");
    let file_repo = format!("file://{}", repo_dir.path().display());
    let backup = ["backup", "--plugin", "postgres", "--database", &source, "--repo", &file_repo];
    let backup = [&backup[..], &["--compression", "none", "--option", "roles=with-passwords"]].concat();
    let id = stowage(&backup, &env).ok().expect("backup").stdout.trim().to_owned();
    let data = repo_dir.path().join("local/default").join(&id).join("data");
    let by_hand = Postgres::start().expect("fourth postgres");
    by_hand.psql("postgres", "CREATE DATABASE copy").expect("database");
    replay_by_hand(&by_hand, "copy", &data, true);
    assert_eq!(roles_of(&by_hand, "copy"), roles, "roles replayed by psql");
    assert_eq!(by_hand.schema("copy").expect("schema"), postgres.schema("source").expect("schema"));
}

#[test]
fn a_database_that_extends_postgres_restores_with_its_definitions_and_large_objects() {
    let postgres = Postgres::start().expect("postgres");
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let mut env = s3.env();
    env.extend(password_env());
    postgres.psql("postgres", EXTENDED_ROLES).expect("roles");
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &extended_fixture()).expect("load the extended schema");

    let repo = "s3://backups/extended";
    let source = postgres.url(SCRAM_USER, "source");
    let backup = stowage(&["backup", "--plugin", "postgres", "--database", &source, "--repo", repo], &env);
    let backup = backup.ok().expect("backup");
    assert!(!backup.stderr.contains("dependency cycle"), "{}", backup.stderr);
    let target = postgres.url(SCRAM_USER, "target");
    let restore = ["restore", "--plugin", "postgres", "--database", &target, "--repo", repo];
    stowage(&restore, &env).ok().expect("restore");

    // pg_dump --schema-only covers every definition, owner and privilege (and the
    // publications, event triggers and user mappings); contents the rows and the large
    // objects with their owners, privileges and comments.
    let contents = assert_same_database(&postgres, "target", "source");
    assert!(contents.contains("424242|ext_owner|{"), "an owned large object with privileges: {contents}");
    assert!(contents.contains("|3145728|"), "the 3 MiB large object: {contents}");
    // What the definitions do, not only how they print.
    let uses = "SELECT row(t.*)::text FROM ext.ledger_totals t; \
                SELECT string_agg(name, ',' ORDER BY name) FROM ext.ledger; \
                SELECT string_agg(code, ',' ORDER BY code COLLATE ext.numeric_order) FROM ext.ledger; \
                SELECT count(*) FROM ext.ledger WHERE search @@ to_tsquery('ext.docs', 'run'); \
                SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
                WHERE attrelid = 'ext.readings_2025'::regclass AND attnum > 0; \
                SELECT count(*) FROM ext.readings";
    let used = postgres.psql("source", uses).expect("source");
    assert_eq!(postgres.psql("target", uses).expect("target"), used);
    assert!(used.contains("value,sensor,taken"), "the partition keeps its own column order: {used}");
    let next = "INSERT INTO ext.counters (id) VALUES (3) RETURNING value";
    assert_eq!(postgres.psql("target", next).expect("default").trim(), "43", "the default reads the restored table");

    // Replacing the contents clears what belongs to no schema too (event triggers,
    // publications, large objects, casts, servers), and restores the same again.
    postgres.psql("target", "DELETE FROM ext.counters WHERE id = 3").expect("undo");
    let mut replace = restore.to_vec();
    replace.push("--replace");
    stowage(&replace, &env).ok().expect("restore with --replace");
    assert_eq!(assert_same_database(&postgres, "target", "source"), contents);
}

#[test]
fn sections_replay_with_psql_alone() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", PRODUCTION_ROLES).expect("roles");
    postgres.psql("postgres", EXTENDED_ROLES).expect("roles");
    for (name, fixture) in [("rich", fixture()), ("production", production_fixture()), ("extended", extended_fixture())]
    {
        let (source, replayed) = (format!("{name}_source"), format!("{name}_replayed"));
        postgres.psql("postgres", &format!("CREATE DATABASE {source}; CREATE DATABASE {replayed}")).expect("databases");
        postgres.psql_file(&source, &fixture).expect("load the fixture");
        let repo_dir = tempfile::tempdir().expect("repo");
        let repo = format!("file://{}", repo_dir.path().display());
        let url = postgres.url(SCRAM_USER, &source);
        let args = ["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo, "--compression", "none"];
        let id = stowage(&args, &password_env()).ok().expect("backup").stdout.trim().to_owned();

        let data = repo_dir.path().join("local/default").join(&id).join("data");
        let tables = data_artifacts(&data).len();
        assert!(name != "rich" || tables == 8, "one artifact per table: {tables}");
        replay_by_hand(&postgres, &replayed, &data, false);
        assert_same_database(&postgres, &replayed, &source);
    }
}

#[test]
fn every_authentication_method_logs_in_and_a_wrong_password_is_named() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE small").expect("database");
    postgres.psql("small", "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)").expect("table");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    for user in [SCRAM_USER, MD5_USER, CLEARTEXT_USER, TRUST_USER] {
        let url = postgres.url(user, "small");
        let backup = stowage(&["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo], &password_env());
        backup.ok().unwrap_or_else(|e| panic!("backup as {user}: {e}"));
    }
    assert_eq!(complete_backups(&repo, &[]), 4);

    for user in [SCRAM_USER, MD5_USER, CLEARTEXT_USER] {
        let url = postgres.url(user, "small");
        let wrong = [("STOWAGE_DATABASE_PASSWORD".to_owned(), "not-the-password".to_owned())];
        let failed = stowage(&["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo], &wrong);
        let failed = failed.failed().expect("backup with a wrong password");
        assert!(
            failed.stderr.contains("authentication failed")
                && failed.stderr.contains(&format!("password authentication failed for user \"{user}\"")),
            "{}",
            failed.stderr
        );
    }
    assert_eq!(complete_backups(&repo, &[]), 4, "failed runs commit nothing");
}

#[test]
fn unreachable_server_and_missing_tls_end_precisely_without_a_backup() {
    let postgres = Postgres::start().expect("postgres");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let closed = format!("postgres://postgres@127.0.0.1:{}/postgres", stowage_tests::free_port().expect("port"));
    let failed = stowage(&["backup", "--plugin", "postgres", "--database", &closed, "--repo", &repo], &password_env());
    let failed = failed.failed().expect("backup of an unreachable server");
    assert!(
        failed.stderr.contains("cannot connect to the database") && failed.stderr.contains("refused"),
        "{}",
        failed.stderr
    );

    let tls = format!("{}?sslmode=require", postgres.url(SCRAM_USER, "postgres"));
    let failed = stowage(&["backup", "--plugin", "postgres", "--database", &tls, "--repo", &repo], &password_env());
    let failed = failed.failed().expect("backup requiring TLS from a server without it");
    assert!(
        failed.stderr.contains("TLS is required (sslmode) but the server does not accept TLS"),
        "{}",
        failed.stderr
    );
    assert_eq!(complete_backups(&repo, &[]), 0);
}

#[test]
fn a_database_dropped_mid_backup_fails_the_backup_and_commits_nothing() {
    let failed = interrupted_backup(|postgres| {
        postgres.psql("postgres", "DROP DATABASE doomed WITH (FORCE)").expect("drop database");
    });
    assert!(
        failed.stderr.contains("the connection to the database was lost")
            && failed.stderr.contains("terminating connection due to administrator command"),
        "{}",
        failed.stderr
    );
}

#[test]
fn a_database_server_killed_mid_backup_fails_the_backup_with_a_database_reason() {
    let failed = interrupted_backup(|postgres| postgres.crash().expect("kill the server"));
    assert!(failed.stderr.contains("error: plugin postgres: "), "{}", failed.stderr);
    assert!(failed.stderr.contains("the connection to the database was lost"), "{}", failed.stderr);
}

/// A backup of database `doomed` that is reliably mid-way (connected, in its snapshot,
/// waiting for a lock another session holds) when `end` happens to the server; returns
/// the failed run after checking that nothing was committed.
fn interrupted_backup(end: impl FnOnce(&mut Postgres)) -> Run {
    let mut postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE doomed").expect("database");
    postgres.psql("doomed", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS x").expect("table");
    let mut locker = postgres
        .client("psql", "doomed")
        .args(["-X", "-q", "-c", "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("locker");
    // The locker must hold the table before the backup starts, or the backup reads it first.
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                WHERE c.relname = 't' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    wait_until("the locker holds the table", Duration::from_secs(60), || {
        postgres.psql("doomed", held).is_ok_and(|n| n.trim() == "1")
    })
    .expect("locker");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let url = postgres.url(SCRAM_USER, "doomed");
    let mut backup = command(["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo], &password_env())
        .expect("command")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("backup");
    // Generous: the first test of a session to load the plugin compiles it, on a busy machine.
    let blocked = wait_until("the backup waits for its lock", Duration::from_secs(240), || {
        backup.try_wait().is_ok_and(|exit| exit.is_some())
            || postgres
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stowage' AND wait_event_type = 'Lock'",
                )
                .is_ok_and(|n| n.trim() == "1")
    });
    let exited_early = backup.try_wait().is_ok_and(|exit| exit.is_some());
    if blocked.is_err() || exited_early {
        let _ = backup.kill();
        let output = backup.wait_with_output().expect("backup exit");
        panic!(
            "the backup did not wait for its lock ({}):\n{}",
            if exited_early { "it ended first" } else { "timed out" },
            String::from_utf8_lossy(&output.stderr)
        );
    }
    end(&mut postgres);
    let failed = Run::from(backup.wait_with_output().expect("backup exit")).failed().expect("the backup fails");
    assert_eq!(complete_backups(&repo, &[]), 0);
    let _ = locker.kill();
    let _ = locker.wait();
    failed
}

#[test]
fn tls_modes_encrypt_and_verify_what_they_promise() {
    let postgres = Postgres::start_tls_only().expect("postgres with TLS");
    let ca = postgres.ca.clone().expect("CA");
    postgres.psql("postgres", "CREATE DATABASE secure").expect("database");
    postgres.psql("secure", "CREATE TABLE t AS SELECT generate_series(1, 5000) AS x").expect("table");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let backup = |host: &str, mode: &str, ca: Option<&str>| {
        let url = format!("postgres://postgres@{host}:{}/secure?sslmode={mode}", postgres.port);
        let ca_option = ca.map(|pem| format!("tls-ca={pem}"));
        let mut args = vec!["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo];
        if let Some(option) = &ca_option {
            args.extend(["--option", option]);
        }
        stowage(&args, &password_env())
    };
    // The server refuses unencrypted TCP, so every success below went over TLS.
    for (host, mode, ca) in [
        ("localhost", "verify-full", Some(ca.as_str())),
        ("127.0.0.1", "verify-ca", Some(ca.as_str())),
        ("127.0.0.1", "require", None),
        ("127.0.0.1", "prefer", None),
    ] {
        backup(host, mode, ca).ok().unwrap_or_else(|e| panic!("sslmode={mode} via {host}: {e}"));
    }
    assert_eq!(complete_backups(&repo, &[]), 4);

    let wrong_name = backup("127.0.0.1", "verify-full", Some(&ca)).failed().expect("verify-full by IP");
    assert!(wrong_name.stderr.contains("certificate not valid for name \"127.0.0.1\""), "{}", wrong_name.stderr);
    let other_ca = unrelated_ca().expect("other CA");
    let untrusted = backup("localhost", "verify-ca", Some(&other_ca)).failed().expect("verify-ca, other CA");
    assert!(untrusted.stderr.contains("invalid peer certificate: UnknownIssuer"), "{}", untrusted.stderr);
    let no_ca = backup("localhost", "verify-full", None).failed().expect("verify-full without a CA");
    assert!(no_ca.stderr.contains("need the server's CA in option tls-ca"), "{}", no_ca.stderr);
    let plain = backup("127.0.0.1", "disable", None).failed().expect("plaintext to a TLS-only server");
    assert!(plain.stderr.contains("no encryption"), "{}", plain.stderr);
    assert_eq!(complete_backups(&repo, &[]), 4, "failed runs commit nothing");

    // A restore over verified TLS too.
    let target = format!("postgres://postgres@localhost:{}/restored?sslmode=verify-full", postgres.port);
    let option = format!("tls-ca={ca}");
    let restore = ["restore", "--plugin", "postgres", "--database", &target, "--option", &option, "--repo", &repo];
    stowage(&restore, &password_env()).ok().expect("restore over TLS");
    assert_eq!(postgres.contents("restored").expect("restored"), postgres.contents("secure").expect("source"));
}

#[test]
fn schema_and_table_data_selection_is_honoured() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &fixture()).expect("load the rich schema");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let source = postgres.url(SCRAM_USER, "source");
    let selection =
        ["--option", "exclude-schemas=Weird \"Schema\" ñ", "--option", "exclude-table-data=shop.events_2025"];
    let backup =
        [&["backup", "--plugin", "postgres", "--database", &source, "--repo", &repo][..], &selection[..]].concat();
    stowage(&backup, &password_env()).ok().expect("backup");
    let target = postgres.url(SCRAM_USER, "target");
    stowage(&["restore", "--plugin", "postgres", "--database", &target, "--repo", &repo], &password_env())
        .ok()
        .expect("restore");

    let schemas = postgres.psql("target", "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'");
    assert_eq!(schemas.expect("schemas").trim(), "public,shop", "the excluded schema is left out");
    let counts = "SELECT (SELECT count(*) FROM shop.events_2025), (SELECT count(*) FROM shop.events_2026), (SELECT count(*) FROM shop.orders)";
    assert_eq!(
        postgres.psql("target", counts).expect("counts").trim(),
        "0|8760|3000",
        "only the excluded table's rows are left out"
    );
}

#[test]
fn a_drill_restores_into_a_scratch_database_twice_and_compares_the_counts() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &fixture()).expect("load the rich schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", dir.path().display());
    let env = password_env();
    let source = postgres.url(SCRAM_USER, "source");
    stowage(&["backup", "--plugin", "postgres", "--database", &source, "--repo", &repo], &env).ok().expect("backup");

    // The scratch database is created, then replaced by the next drill.
    let scratch = postgres.url(SCRAM_USER, "scratch");
    for _ in 0..2 {
        let drill = stowage(&["drill", "--plugin", "postgres", "--database", &scratch, "--repo", &repo], &env);
        let drill = drill.ok().expect("drill");
        assert!(drill.stdout.contains("with the counts of the backup: rows: "), "{}", drill.stdout);
        assert!(
            drill.stdout.contains("tables: 8/8") && drill.stdout.contains("table_rows_sha256: "),
            "{}",
            drill.stdout
        );
    }
    assert_same_database(&postgres, "scratch", "source");

    // Never into the backed-up database, under any name of its server.
    let onto_source = postgres.url(SCRAM_USER, "source").replace("127.0.0.1", "localhost");
    let refused = stowage(&["drill", "--plugin", "postgres", "--database", &onto_source, "--repo", &repo], &env);
    let refused = refused.failed().expect("a drill into the source");
    assert!(refused.stderr.contains("(DrillTargetIsSource)"), "{}", refused.stderr);
    assert_same_database(&postgres, "scratch", "source");

    // A drill that cannot restore fails with the reason.
    let wrong = [("STOWAGE_DATABASE_PASSWORD".to_owned(), "wrong".to_owned())];
    let failed = stowage(&["drill", "--plugin", "postgres", "--database", &scratch, "--repo", &repo], &wrong);
    let failed = failed.failed().expect("a drill with a wrong password");
    assert!(failed.stderr.contains("did not pass (DatabaseAuthenticationFailed)"), "{}", failed.stderr);
}

#[test]
fn a_restore_picks_schemas_and_tables_as_pg_restore_does() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", PRODUCTION_ROLES).expect("roles");
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &production_fixture()).expect("load the production-shaped schema");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let source = postgres.url(SCRAM_USER, "source");
    stowage(&["backup", "--plugin", "postgres", "--database", &source, "--repo", &repo], &password_env())
        .ok()
        .expect("backup");
    let restore = |database: &str, options: &[&str]| {
        let target = postgres.url(SCRAM_USER, database);
        let mut args = vec!["restore", "--plugin", "postgres", "--database", &target, "--repo", &repo];
        args.extend(options.iter().flat_map(|option| ["--option", option]));
        stowage(&args, &password_env())
    };
    let tables_of = |database: &str| {
        let tables = "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) FROM pg_tables \
                      WHERE schemaname IN ('app', 'legacy')";
        postgres.psql(database, tables).expect("tables").trim().to_owned()
    };
    let contents = postgres.contents("source").expect("contents");
    let contents_of = |prefix: &str| -> String {
        contents.lines().filter(|line| line.starts_with(prefix)).map(|line| format!("{line}\n")).collect()
    };

    // One schema, with everything in it, into a new database: as pg_dump --schema shows it.
    let legacy = restore("only_legacy", &["restore-schemas=legacy"]).ok().expect("restore of a schema");
    assert!(legacy.stdout.contains("restored (schemas legacy)"), "{}", legacy.stdout);
    assert_eq!(
        postgres.schema_of("only_legacy", &["--schema=legacy"]).expect("schema"),
        postgres.schema_of("source", &["--schema=legacy"]).expect("schema")
    );
    assert_eq!(tables_of("only_legacy"), "legacy.events,legacy.events_2024,legacy.no_columns,legacy.only_generated");
    assert_eq!(postgres.contents("only_legacy").expect("contents"), contents_of("legacy."));
    // Objects of no schema (here the database's settings) come with whole restores only.
    assert!(postgres.properties("only_legacy").expect("properties").starts_with('|'));
    // The other schema, with its default privileges, into a database that has the first.
    restore("only_legacy", &["restore-schemas=app"]).ok().expect("restore of the other schema");
    assert_eq!(
        postgres.schema_of("only_legacy", &["--schema=app"]).expect("schema"),
        postgres.schema_of("source", &["--schema=app"]).expect("schema")
    );

    // Two tables into a database that holds what they use (their schema and a domain):
    // with their keys, indexes, policies, statistics, comments, owners, privileges, their
    // serial sequence, and rows; nothing else of the schema.
    // (Its IntervalStyle as the source's, so that the intervals' text compares.)
    postgres
        .psql("postgres", "CREATE DATABASE two_tables; ALTER DATABASE two_tables SET intervalstyle = sql_standard")
        .expect("create");
    postgres
        .psql("two_tables", "CREATE SCHEMA app AUTHORIZATION app_owner; CREATE DOMAIN app.positive AS integer")
        .expect("what the tables use");
    let picked = ["--table=app.accounts", "--table=app.orders"];
    restore("two_tables", &["restore-tables=app.accounts,app.orders"]).ok().expect("restore of two tables");
    assert_eq!(
        postgres.schema_of("two_tables", &picked).expect("schema"),
        postgres.schema_of("source", &picked).expect("schema")
    );
    assert_eq!(tables_of("two_tables"), "app.accounts,app.orders");
    assert_eq!(
        postgres.contents("two_tables").expect("contents"),
        contents_of("app.accounts").to_owned() + &contents_of("app.orders")
    );
    assert_eq!(postgres.psql("two_tables", "SELECT nextval('app.orders_id_seq')").expect("sequence").trim(), "201");
    // A table the target has already fails the restore at its first CREATE (its serial
    // sequence's), and nothing changes.
    let again = restore("two_tables", &["restore-tables=app.orders"]).failed().expect("an existing table");
    assert!(
        again.stderr.contains("restoring SEQUENCE app.orders_id_seq") && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    assert_eq!(tables_of("two_tables"), "app.accounts,app.orders");

    // Everything but one table (and what is part of it): as pg_dump --exclude-table shows it.
    restore("without_tickets", &["restore-exclude-tables=app.tickets"]).ok().expect("restore without a table");
    assert_eq!(
        postgres.schema("without_tickets").expect("schema"),
        postgres.schema_of("source", &["--exclude-table=app.tickets"]).expect("schema")
    );
    let without: String =
        contents.lines().filter(|line| !line.starts_with("app.tickets")).map(|l| format!("{l}\n")).collect();
    assert_eq!(postgres.contents("without_tickets").expect("contents"), without);
    assert_eq!(
        postgres.properties("without_tickets").expect("properties"),
        postgres.properties("source").expect("properties")
    );

    // Names the backup lacks, and replace, are refused before anything is restored.
    let unknown = restore("nothing", &["restore-tables=app.nope,app.accounts"]).failed().expect("unknown table");
    let message = "option restore-tables: the backup has no table, view or sequence of its own app.nope";
    assert!(unknown.stderr.contains(message), "{}", unknown.stderr);
    let mut replace = vec!["restore", "--replace", "--plugin", "postgres", "--repo", &repo, "--database"];
    let target = postgres.url(SCRAM_USER, "two_tables");
    replace.extend([target.as_str(), "--option", "restore-tables=app.orders"]);
    let refused = stowage(&replace, &password_env()).failed().expect("replace with a pick");
    assert!(refused.stderr.contains("a partial restore adds to the target and drops nothing"), "{}", refused.stderr);
}

/// `backup` rewritten as plugin versions before per-table artifacts and scopes wrote it,
/// beside it in the same file repository: one `data.sql` holding every table's rows and
/// the large objects, no `-- stowage:in` / `-- stowage:data` lines, a manifest that lists
/// the old artifacts. Returns the old backup's id.
fn as_an_older_plugin_wrote_it(repo: &Path, id: &str) -> String {
    use sha2::Digest;
    let backups = repo.join("local/default");
    let old_id = format!("{}000000", &id[..id.len() - 6]);
    let (data, old_data) = (backups.join(id).join("data"), backups.join(&old_id).join("data"));
    std::fs::create_dir_all(&old_data).expect("old backup directory");
    let read = |name: &str| std::fs::read_to_string(data.join(name)).expect(name);
    let without_scopes = |script: String| -> String {
        script
            .lines()
            .filter(|line| !line.starts_with("-- stowage:in ") && !line.starts_with("-- stowage:data "))
            .map(|line| format!("{line}\n"))
            .collect()
    };
    let mut sections = vec![
        ("pre-data.sql", without_scopes(read("pre-data.sql"))),
        (
            "data.sql",
            data_artifacts(&data).iter().map(|name| without_scopes(read(name))).collect::<String>()
                + &read("large-objects.sql"),
        ),
        ("post-data.sql", without_scopes(read("post-data.sql"))),
    ];
    sections.push(("roles.sql", read("roles.sql")));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backups.join(id).join("manifest.json")).expect("manifest"))
            .expect("json");
    let template = manifest["artifacts"][0].clone();
    let artifacts: Vec<serde_json::Value> = sections
        .iter()
        .map(|(name, content)| {
            std::fs::write(old_data.join(name), content).expect("artifact");
            let mut entry = template.clone();
            entry["name"] = (*name).into();
            entry["object"] = format!("data/{name}").into();
            entry["rawSize"] = content.len().into();
            entry["storedSize"] = content.len().into();
            entry["sha256"] = hex::encode(sha2::Sha256::digest(content.as_bytes())).into();
            entry
        })
        .collect();
    manifest["artifacts"] = artifacts.into();
    manifest["backupId"] = old_id.clone().into();
    std::fs::write(backups.join(&old_id).join("manifest.json"), manifest.to_string()).expect("old manifest");
    old_id
}

#[test]
fn a_backup_in_the_format_of_earlier_plugin_versions_still_restores() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", EXTENDED_ROLES).expect("roles");
    postgres.psql("postgres", "CREATE DATABASE source").expect("create source");
    postgres.psql_file("source", &extended_fixture()).expect("load the extended schema");
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let source = postgres.url(SCRAM_USER, "source");
    let args = ["backup", "--plugin", "postgres", "--database", &source, "--repo", &repo, "--compression", "none"];
    let id = stowage(&args, &password_env()).ok().expect("backup").stdout.trim().to_owned();
    let old_id = as_an_older_plugin_wrote_it(repo_dir.path(), &id);
    let manifest = std::fs::read_to_string(repo_dir.path().join("local/default").join(&old_id).join("manifest.json"));
    assert!(manifest.expect("manifest").contains("\"data.sql\""));

    let restore = |database: &str, options: &[&str]| {
        let target = postgres.url(SCRAM_USER, database);
        let mut args = vec!["restore", "--plugin", "postgres", "--database", &target, "--repo", &repo];
        args.extend(["--backup", &old_id]);
        args.extend(options.iter().flat_map(|option| ["--option", option]));
        stowage(&args, &password_env())
    };
    restore("copy", &[]).ok().expect("restore of the older format");
    let contents = assert_same_database(&postgres, "copy", "source");
    assert!(contents.lines().count() > 3, "{contents}");
    // What needs the scopes says so, and changes nothing.
    let refused = restore("partial", &["restore-schemas=public"]).failed().expect("a partial restore of it");
    assert!(
        refused.stderr.contains("did not record where each object belongs; restore it whole"),
        "{}",
        refused.stderr
    );
    let databases = "SELECT count(*) FROM pg_database WHERE datname = 'partial'";
    assert_eq!(postgres.psql("postgres", databases).expect("databases").trim(), "0");
}

/// A `psql` running `sql` in the background, its output discarded.
fn background_psql(postgres: &Postgres, database: &str, sql: &str) -> std::process::Child {
    postgres
        .client("psql", database)
        .args(["-X", "-q", "-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql")
}

/// Waits until `database` has `count` lock requests of `mode` on table `table` that
/// are `granted` (or waiting).
fn wait_for_locks(postgres: &Postgres, database: &str, table: &str, mode: &str, granted: bool, count: usize) {
    let query = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = '{table}' AND l.mode = '{mode}' AND l.granted = {granted}"
    );
    let waited = wait_until(&format!("{count} {mode} on {table}, granted {granted}"), Duration::from_secs(60), || {
        postgres.psql(database, &query).is_ok_and(|n| n.trim() == count.to_string())
    });
    if let Err(error) = waited {
        let locks = postgres.psql(
            database,
            "SELECT l.relation::regclass, l.mode, l.granted, left(a.query, 100) FROM pg_locks l \
             JOIN pg_stat_activity a USING (pid) WHERE l.relation::regclass::text !~ '^pg_'",
        );
        panic!("{error:#}; the locks: {locks:?}");
    }
}

#[test]
fn a_big_table_is_read_in_pieces_on_sessions_sharing_one_snapshot() {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE pieces; CREATE DATABASE copy_in_place").expect("databases");
    postgres
        .psql(
            "pieces",
            "CREATE TABLE big (id int PRIMARY KEY, payload text); \
             INSERT INTO big SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 40000) i; \
             CREATE INDEX big_payload ON big (payload); CREATE UNIQUE INDEX big_both ON big (id, payload); \
             CREATE TABLE gate (x int); INSERT INTO gate VALUES (1); \
             CREATE TABLE later (x int); INSERT INTO later SELECT generate_series(1, 500); \
             CREATE INDEX later_x ON later (x)",
        )
        .expect("tables");
    // The backup's session locks big, then waits for gate, which this session holds.
    let mut gate = background_psql(&postgres, "pieces", "BEGIN; LOCK TABLE gate; SELECT pg_sleep(600)");
    wait_for_locks(&postgres, "pieces", "gate", "AccessExclusiveLock", true, 1);
    let repo_dir = tempfile::tempdir().expect("repo");
    let repo = format!("file://{}", repo_dir.path().display());
    let url = format!("{}?jobs=3&chunk-size=1MB", postgres.url(SCRAM_USER, "pieces"));
    let backup = ["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo, "--compression", "none"];
    let backup = command(backup, &password_env())
        .expect("command")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("backup");
    wait_for_locks(&postgres, "pieces", "gate", "AccessShareLock", false, 1);
    // Its snapshot is taken: rows written now are not in the backup, whichever session
    // reads their table.
    postgres
        .psql("pieces", "INSERT INTO big VALUES (40001, 'late'); INSERT INTO later VALUES (501)")
        .expect("late rows");
    // Someone queues for big, which the backup's session holds: the other sessions cannot
    // lock it without waiting forever, so the backup's own session reads all of it.
    let mut alter = background_psql(&postgres, "pieces", "ALTER TABLE big ADD COLUMN note text");
    wait_for_locks(&postgres, "pieces", "big", "AccessExclusiveLock", false, 1);
    // Killing psql would leave its server process sleeping, and the lock held.
    postgres
        .psql(
            "pieces",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'BEGIN; LOCK TABLE gate%'",
        )
        .expect("end the gate's session");
    let _ = gate.wait();
    let backup = Run::from(backup.wait_with_output().expect("backup exit")).ok().expect("backup");
    assert!(backup.stderr.contains("the backup's own session reads it"), "{}", backup.stderr);
    assert!(alter.wait().expect("alter").success(), "the queued ALTER runs once the backup is done");

    let id = backup.stdout.trim();
    let data = repo_dir.path().join("local/default").join(id).join("data");
    let artifacts = data_artifacts(&data);
    let big: Vec<&String> = artifacts.iter().filter(|name| name.ends_with(".public_big.sql")).collect();
    assert!(big.len() >= 5, "big in pieces of 1 MB: {artifacts:?}");
    assert_eq!(artifacts.len(), big.len() + 2, "{artifacts:?}");
    postgres
        .psql("pieces", "DELETE FROM big WHERE id > 40000; DELETE FROM later WHERE x > 500; ALTER TABLE big DROP note")
        .expect("the source as the backup saw it");

    // Into a database the restore creates, on three sessions, built under a staging
    // name and renamed when complete; a staging database left by an interrupted restore
    // is named, and never taken for the target.
    let copy = format!("{}?jobs=3", postgres.url(SCRAM_USER, "copy_created"));
    let restore = ["restore", "--plugin", "postgres", "--database", &copy, "--repo", &repo];
    postgres.psql("postgres", "CREATE DATABASE \"copy_created-stowage-restore\"").expect("a leftover");
    let refused = stowage(&restore, &password_env()).failed().expect("restore beside a leftover");
    assert!(
        refused.stderr.contains(
            "database \"copy_created-stowage-restore\" exists: a restore into \"copy_created\" was \
                                 interrupted while it built it there; drop it and restore again"
        ),
        "{}",
        refused.stderr
    );
    postgres.psql("postgres", "DROP DATABASE \"copy_created-stowage-restore\"").expect("drop the leftover");
    let created = stowage(&restore, &password_env()).ok().expect("restore into a new database");
    // The key and the indexes build on all three sessions.
    assert!(created.stderr.contains("building 4 indexes and keys on 3 sessions"), "{}", created.stderr);
    let staged = "SELECT count(*) FROM pg_database WHERE datname LIKE '%stowage-restore'";
    assert_eq!(postgres.psql("postgres", staged).expect("databases").trim(), "0");
    // Into an existing one, in one transaction; with psql alone.
    let in_place = format!("{}?jobs=3", postgres.url(SCRAM_USER, "copy_in_place"));
    let restored =
        stowage(&["restore", "--plugin", "postgres", "--database", &in_place, "--repo", &repo], &password_env())
            .ok()
            .expect("restore into an existing database");
    assert!(restored.stdout.contains("3 tables, 40501 rows restored"), "{}", restored.stdout);
    postgres.psql("postgres", "CREATE DATABASE replayed").expect("database");
    replay_by_hand(&postgres, "replayed", &data, false);
    for copy in ["copy_created", "copy_in_place", "replayed"] {
        assert_same_database(&postgres, copy, "pieces");
    }
}
