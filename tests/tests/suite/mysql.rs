//! The MySQL plugin against a real MariaDB 10.11 and a real S3 server: every type and
//! object round-trips exactly and the stored artifacts replay with the `mariadb` client
//! alone, a backup under writes is one instant, the backup lock is bounded and its
//! absence is reported, and a failed restore leaves no half-restored database.

use std::path::Path;
use std::time::{Duration, Instant};

use stowage_tests::mariadb::{Mariadb, PASSWORD, USER};
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, command, run};
use stowage_tests::wait_until;

/// Its `versioned` table's row timestamps start again on restore.
const VERSIONED: &[&str] = &["versioned"];

fn stowage(args: &[&str], env: &[(String, String)]) -> Run {
    run(args, env).expect("run stowage")
}

/// A server with database `fixture` loaded from tests/fixtures/mysql.
fn source() -> Mariadb {
    let server = Mariadb::start().expect("mariadb");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mysql/every-type.sql");
    server.sql("", "CREATE DATABASE fixture").expect("create");
    server.replay("fixture", &std::fs::read(path).expect("fixture")).expect("load the fixture");
    server
}

fn url(server: &Mariadb, database: &str) -> String {
    server.url(USER, PASSWORD, database)
}

/// The manifest of the only backup in file repository `repo`.
fn manifest(repo: &Path) -> serde_json::Value {
    let backups = repo.join("local/default");
    let id = std::fs::read_dir(&backups).expect("backups").next().expect("a backup").expect("entry").path();
    serde_json::from_slice(&std::fs::read(id.join("manifest.json")).expect("manifest")).expect("json")
}

/// The data directory of the only backup in file repository `repo`, and its artifact
/// files in name order.
fn stored_artifacts(repo: &Path) -> (std::path::PathBuf, Vec<String>) {
    let data = std::fs::read_dir(repo.join("local/default")).expect("dir").next().expect("backup");
    let data = data.expect("entry").path().join("data");
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .expect("artifacts")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (data, names)
}

/// Stored artifact `name` decompressed, as `zstd -dc` gives it.
fn unzstd(data: &Path, name: &str) -> Vec<u8> {
    let output = std::process::Command::new("zstd").arg("-dc").arg(data.join(name)).output().expect("zstd");
    assert!(output.status.success(), "zstd -dc {name}");
    output.stdout
}

/// The artifacts of a backup of one database in the documented replay order, as one
/// script: `schema.sql`, `data.*` in name order, `post.sql`.
fn replay_script(data: &Path, names: &[String]) -> Vec<u8> {
    let ordered = ["schema.sql.zst".to_owned()]
        .into_iter()
        .chain(names.iter().filter(|n| n.starts_with("data.")).cloned())
        .chain(["post.sql.zst".to_owned()]);
    ordered.flat_map(|name| unzstd(data, &name)).collect()
}

#[test]
fn every_type_round_trips_through_s3_and_replays_with_the_mariadb_client() {
    let server = source();
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let env = s3.env();
    let repo = "s3://backups/mysql";
    let expected = server.state("fixture", VERSIONED).expect("state");
    for needle in ["😀 four bytes", "0x00FF0A0D5C27225C", "odd name; with `quotes` and ü", "ansi_concat", "nightly"]
    {
        assert!(expected.contains(needle), "the fixture lacks {needle}:\n{expected}");
    }

    stowage(&["backup", "--plugin", "mysql", "--database", &url(&server, "fixture"), "--repo", repo], &env)
        .ok()
        .expect("backup");
    // Every table's plain keys built after its data, however small (the default waits for 16MB).
    let keys_after_data = format!("{}?keys-after-data=0", url(&server, "restored"));
    let restore = ["restore", "--plugin", "mysql", "--database", &keys_after_data, "--repo", repo];
    let restored = stowage(&restore, &env).ok().expect("restore");
    assert!(restored.stdout.contains("restored database restored: 17 tables (41 rows)"), "{}", restored.stdout);
    let late_keys = "building 4 keys of 2 tables after their data, on 2 sessions";
    assert!(restored.stderr.contains(late_keys), "{}", restored.stderr);
    let orphan = "foreign key child_parent of table child: 1 rows reference no row of parent";
    assert!(restored.stderr.contains(orphan), "{}", restored.stderr);
    assert_eq!(server.state("restored", VERSIONED).expect("state"), expected.replace("fixture", "restored"));
    // The sequence goes on after the values its cache may have handed out (as with
    // mariadb-dump), never before; a stored zero in an AUTO_INCREMENT column stays zero.
    assert_eq!(server.sql("restored", "SELECT NEXTVAL(ids)").expect("nextval").trim(), "5100");
    assert_eq!(server.sql("restored", "SELECT n FROM counters WHERE id = 0").expect("zero").trim(), "0");
    assert_eq!(server.sql("restored", "SELECT twice(21), ansi_concat('a', 'b')").expect("call").trim(), "42\tab");

    // A restore never mixes into a database that has something in it.
    let refused = stowage(&restore, &env).failed().expect("refused");
    assert!(refused.stderr.contains("target not empty: database \"restored\" has"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);
    server.sql("restored", "DROP TABLE numbers; CREATE TABLE stray (x INT)").expect("change");
    // One connection this time (the first restore loaded tables on two).
    let one_job = format!("{}?jobs=1", url(&server, "restored"));
    let mut replace = restore.to_vec();
    replace[4] = &one_job;
    replace.insert(1, "--replace");
    stowage(&replace, &env).ok().expect("replace");
    assert_eq!(server.state("restored", VERSIONED).expect("state"), expected.replace("fixture", "restored"));

    // What is stored is plain SQL: the client replays it alone, in name order.
    let files = tempfile::tempdir().expect("tempdir");
    let file_repo = format!("file://{}", files.path().display());
    stowage(&["backup", "--plugin", "mysql", "--database", &url(&server, "fixture"), "--repo", &file_repo], &[])
        .ok()
        .expect("backup to files");
    let summary = &manifest(files.path())["summary"]["attributes"];
    assert_eq!(summary["consistency"], "backup-stage", "{summary}");
    let held: f64 = summary["lock_held_seconds"].as_str().expect("lock_held_seconds").parse().expect("seconds");
    assert!(held < 2.0, "the lock is held for the definitions and two small tables only: {held} s");
    assert!(summary["binlog_file"].as_str().is_some_and(|f| f.starts_with("binlog.")), "{summary}");
    assert!(summary["gtid"].as_str().is_some_and(|g| g.starts_with("0-1-")), "{summary}");
    let (data, names) = stored_artifacts(files.path());
    let script = replay_script(&data, &names);
    server.sql("", "CREATE DATABASE by_hand").expect("create");
    server.replay("by_hand", &script).expect("replay with the mariadb client");
    assert_eq!(server.state("by_hand", VERSIONED).expect("state"), expected.replace("fixture", "by_hand"));
}

#[test]
fn a_backup_under_writes_is_one_instant() {
    let server = Mariadb::start().expect("mariadb");
    server
        .replay(
            "",
            b"CREATE DATABASE bank;
             USE bank;
             CREATE TABLE counter (id INT PRIMARY KEY, n BIGINT NOT NULL);
             INSERT INTO counter VALUES (1, 0);
             CREATE TABLE ledger (id BIGINT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(40));
             CREATE TABLE bulk (id INT PRIMARY KEY, pad VARCHAR(200));
             INSERT INTO bulk SELECT seq, REPEAT('x', 200) FROM seq_1_to_200000;
             ANALYZE TABLE bulk;
             DELIMITER ;;
             CREATE PROCEDURE write_forever()
             BEGIN
               LOOP
                 START TRANSACTION;
                 UPDATE counter SET n = n + 1 WHERE id = 1;
                 INSERT INTO ledger (note) VALUES ('one more');
                 COMMIT;
               END LOOP;
             END;;
             DELIMITER ;
             ",
        )
        .expect("schema");
    // From here on every binary log transaction is one of the writer's.
    let gtid_sequence = |gtid: &str| -> u64 {
        gtid.trim().rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("GTID {gtid:?}"))
    };
    let before = gtid_sequence(&server.sql("", "SELECT @@gtid_binlog_pos").expect("gtid"));
    let mut writer = server.background("bank", "CALL write_forever()").expect("writer");
    let count = |database: &str| -> u64 {
        server.sql(database, "SELECT COUNT(*) FROM ledger").expect("count").trim().parse().expect("number")
    };
    wait_until("the writer commits", Duration::from_secs(30), || count("bank") > 100).expect("writer");

    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    // Three connections: the pieces of bulk (about 45 MB in ranges of its key), counter
    // and ledger are read on them in turn, from snapshots that must be the one instant.
    let three = format!("{}?jobs=3&chunk-size=8MB", url(&server, "bank"));
    stowage(&["backup", "--plugin", "mysql", "--database", &three, "--repo", &repo], &[]).ok().expect("backup");
    let written_after = count("bank");
    let (_, artifacts) = stored_artifacts(files.path());
    let bulk = artifacts.iter().filter(|name| name.ends_with(".bulk.sql.zst")).count();
    assert!(bulk >= 4, "bulk in ranges of its key: {artifacts:?}");
    let _ = writer.kill();
    let _ = writer.wait();
    let recorded = manifest(files.path())["summary"]["attributes"]["gtid"].as_str().expect("gtid").to_owned();

    stowage(&["restore", "--plugin", "mysql", "--database", &url(&server, "copy"), "--repo", &repo], &[])
        .ok()
        .expect("restore");
    let counter: u64 = server.sql("copy", "SELECT n FROM counter").expect("n").trim().parse().expect("number");
    let ledger = count("copy");
    assert_eq!(counter, ledger, "the counter and the ledger were committed together");
    assert!(
        ledger > 100 && ledger < written_after,
        "the backup is one instant while writes went on: {ledger} of {written_after}"
    );
    // The recorded GTID is that instant: replication or point-in-time recovery from it
    // applies exactly the transactions the backup lacks.
    assert_eq!(gtid_sequence(&recorded) - before, ledger, "GTID {recorded}, writes from sequence {before}");
    assert_eq!(server.sql("copy", "SELECT COUNT(*) FROM bulk").expect("bulk").trim(), "200000");
}

#[test]
fn the_backup_lock_waits_for_no_long_write_is_bounded_and_its_absence_reported() {
    let server = Mariadb::start().expect("mariadb");
    server
        .sql(
            "",
            "CREATE DATABASE app;
             CREATE TABLE app.held (x INT) ENGINE=InnoDB;
             CREATE TABLE app.other (x INT) ENGINE=InnoDB;
             CREATE TABLE app.legacy (x INT) ENGINE=MyISAM;
             INSERT INTO app.legacy VALUES (1);",
        )
        .expect("schema");
    // A long write does not keep the backup lock waiting (FLUSH TABLES WITH READ LOCK
    // would wait for it, and every other writer behind that): only its commit waits.
    server.sql("app", "INSERT INTO other VALUES (1), (2)").expect("rows");
    let mut writer = server.background("app", "UPDATE other SET x = x + SLEEP(3)").expect("long update");
    wait_until("the update runs", Duration::from_secs(30), || {
        server
            .sql("", "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'UPDATE other%'")
            .is_ok_and(|n| n.trim() == "1")
    })
    .expect("writer");
    let beside = tempfile::tempdir().expect("tempdir");
    let beside_repo = format!("file://{}", beside.path().display());
    let bounded = format!("{}?lock-timeout=2", url(&server, "app"));
    stowage(&["backup", "--plugin", "mysql", "--database", &bounded, "--repo", &beside_repo], &[])
        .ok()
        .expect("backup beside a long update");
    assert_eq!(manifest(beside.path())["summary"]["attributes"]["consistency"], "backup-stage");
    assert!(writer.wait().expect("update").success(), "the update commits after the backup lock");

    // A session holding a table lock keeps the backup lock waiting.
    let mut holder = server.background("app", "LOCK TABLES held WRITE; SELECT SLEEP(120)").expect("holder");
    wait_until("the table lock is held", Duration::from_secs(30), || {
        server
            .sql("", "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(120)%'")
            .is_ok_and(|n| n.trim() == "1")
    })
    .expect("holder");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    let started = Instant::now();
    let failed = stowage(&["backup", "--plugin", "mysql", "--database", &bounded, "--repo", &repo], &[])
        .failed()
        .expect("lock timeout");
    assert!(started.elapsed() < Duration::from_secs(30), "the wait was bounded: {:?}", started.elapsed());
    let refused = "the backup lock (BACKUP STAGE BLOCK_COMMIT) was not granted within 2 s";
    assert!(failed.stderr.contains(refused), "{}", failed.stderr);
    assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
    // Nothing is left waiting: other tables take writes at once.
    server.sql("app", "SET SESSION lock_wait_timeout = 5; INSERT INTO other VALUES (1)").expect("write after");
    let _ = holder.kill();
    let _ = holder.wait();

    // A user without RELOAD gets a snapshot of the transactional tables and a warning
    // naming the tables that may not match it.
    server
        .sql(
            "",
            "CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'reader-secret';
             GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON app.* TO 'reader'@'127.0.0.1';",
        )
        .expect("reader");
    let reader = server.url("reader", "reader-secret", "app");
    let backup = stowage(&["backup", "--plugin", "mysql", "--database", &reader, "--repo", &repo], &[])
        .ok()
        .expect("backup without RELOAD");
    assert!(backup.stderr.contains("no lock for a consistent point"), "{}", backup.stderr);
    assert!(backup.stderr.contains("tables legacy use engines without snapshots (MyISAM)"), "{}", backup.stderr);
    assert_eq!(manifest(files.path())["summary"]["attributes"]["consistency"], "snapshot-only");

    let nobody = format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/app", stowage_tests::free_port().expect("port"));
    let unreachable = stowage(&["backup", "--plugin", "mysql", "--database", &nobody, "--repo", &repo], &[])
        .failed()
        .expect("unreachable");
    assert!(
        unreachable.stderr.contains("cannot connect to the database: MySQL at 127.0.0.1"),
        "{}",
        unreachable.stderr
    );
    assert!(!unreachable.stderr.contains("panicked"), "{}", unreachable.stderr);

    let wrong = server.url(USER, "not-the-password", "app");
    let denied = stowage(&["backup", "--plugin", "mysql", "--database", &wrong, "--repo", &repo], &[])
        .failed()
        .expect("wrong password");
    assert!(denied.stderr.contains("Access denied for user"), "{}", denied.stderr);
    assert!(!denied.stderr.contains("panicked"), "{}", denied.stderr);
}

#[test]
fn a_failed_restore_leaves_no_half_restored_database() {
    let server = source();
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    stowage(&["backup", "--plugin", "mysql", "--database", &url(&server, "fixture"), "--repo", &repo], &[])
        .ok()
        .expect("backup");
    // This user may fill its databases but not create views and routines that run as
    // root, which the fixture's are: the restore fails in post.sql, after the data.
    server
        .sql(
            "",
            "CREATE USER 'limited'@'127.0.0.1' IDENTIFIED BY 'limited-secret';
             GRANT ALL ON `target\\_%`.* TO 'limited'@'127.0.0.1';
             CREATE DATABASE target_existing CHARACTER SET latin1;",
        )
        .expect("limited user");
    let bad = format!("{}?jobs=0", url(&server, "target_new"));
    let refused =
        stowage(&["restore", "--plugin", "mysql", "--database", &bad, "--repo", &repo], &[]).failed().expect("jobs=0");
    assert!(refused.stderr.contains("option jobs must be 1 to 16"), "{}", refused.stderr);
    for (database, left) in [("target_new", "was dropped again"), ("target_existing", "was left empty")] {
        let target = server.url("limited", "limited-secret", database);
        let failed = stowage(&["restore", "--plugin", "mysql", "--database", &target, "--repo", &repo], &[])
            .failed()
            .expect("restore fails");
        assert!(failed.stderr.contains("post.sql"), "{}", failed.stderr);
        assert!(failed.stderr.contains(&format!("database {database} {left}")), "{}", failed.stderr);
        assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
    }
    assert_eq!(server.sql("", "SHOW DATABASES LIKE 'target_new'").expect("databases"), "");
    // With definers=current-user the same user restores it whole, as their definer
    // (functions by a user without SUPER need log_bin_trust_function_creators with a
    // binary log, as on managed servers).
    server.sql("", "SET GLOBAL log_bin_trust_function_creators = 1").expect("trust function creators");
    let target = format!("{}?definers=current-user", server.url("limited", "limited-secret", "target_new"));
    stowage(&["restore", "--plugin", "mysql", "--database", &target, "--repo", &repo], &[])
        .ok()
        .expect("restore as the definer");
    assert_eq!(
        server.state("target_new", VERSIONED).expect("state"),
        server
            .state("fixture", VERSIONED)
            .expect("state")
            .replace("fixture", "target_new")
            .replace("root@localhost", "limited@127.0.0.1")
    );

    // A user allowed two connections restores on two of the four asked for.
    server
        .sql(
            "",
            "CREATE USER 'few'@'127.0.0.1' IDENTIFIED BY 'few-secret' WITH MAX_USER_CONNECTIONS 2;
             GRANT ALL ON *.* TO 'few'@'127.0.0.1';",
        )
        .expect("user with two connections");
    let few = format!("{}?jobs=4", server.url("few", "few-secret", "on_two"));
    let restored = stowage(&["restore", "--plugin", "mysql", "--database", &few, "--repo", &repo], &[])
        .ok()
        .expect("restore on fewer connections");
    assert!(restored.stderr.contains("loading tables on 2 sessions instead of 4"), "{}", restored.stderr);
    assert_eq!(
        server.state("on_two", VERSIONED).expect("state"),
        server.state("fixture", VERSIONED).expect("state").replace("fixture", "on_two")
    );
    assert_eq!(
        server
            .sql(
                "",
                "SELECT DEFAULT_CHARACTER_SET_NAME, (SELECT COUNT(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = 'target_existing') FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME = 'target_existing'"
            )
            .expect("existing"),
        "latin1\t0\n"
    );
}

/// Database `shop` with accounts that hold privileges on it (database, table with GRANT
/// OPTION, column, procedure) and one that holds none there.
const SHOP_WITH_ACCOUNTS: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, total DECIMAL(10,2));
INSERT INTO shop.orders VALUES (1, 9.99), (2, 20.00);
CREATE PROCEDURE shop.touch() SELECT 1;
CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-secret';
GRANT SELECT, INSERT, UPDATE ON shop.* TO 'app'@'127.0.0.1';
CREATE USER 'reporter'@'%' IDENTIFIED BY 'reporter-secret';
GRANT SELECT (id) ON shop.orders TO 'reporter'@'%';
GRANT DELETE ON shop.orders TO 'reporter'@'%' WITH GRANT OPTION;
GRANT EXECUTE ON PROCEDURE shop.touch TO 'reporter'@'%';
CREATE USER 'elsewhere'@'%';
GRANT SELECT ON mysql.* TO 'elsewhere'@'%';";

/// `SHOW GRANTS` of `account` on `server`, with database `database` called `shop`.
fn grants(server: &Mariadb, account: &str, database: &str) -> String {
    let grants = server.sql("", &format!("SHOW GRANTS FOR {account}")).expect("grants");
    grants.replace(&format!("`{database}`"), "`shop`")
}

/// Whether `user` logs in to `server` with `password` and reads `database`.orders.
fn reads_orders(server: &Mariadb, user: &str, password: &str, database: &str) -> bool {
    let output = std::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &server.port.to_string(), "-u", user, &format!("-p{password}"), database])
        .args(["--batch", "--skip-column-names", "-e", "SELECT COUNT(*) FROM orders"])
        .output()
        .expect("mariadb");
    output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "2"
}

#[test]
fn accounts_with_privileges_on_the_database_travel_on_request() {
    let source = Mariadb::start().expect("mariadb");
    source.sql("", SHOP_WITH_ACCOUNTS).expect("shop and its accounts");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    let backup = ["backup", "--plugin", "mysql", "--database", &url(&source, "shop"), "--repo", &repo];
    stowage(&[&backup[..], &["--option", "users=with-passwords"]].concat(), &[]).ok().expect("backup");
    // Reading the accounts needs the mysql schema; without, the backup says so.
    let as_app = source.url("app", "app-secret", "shop");
    let denied = ["backup", "--plugin", "mysql", "--database", &as_app, "--repo", &repo, "--option", "users=locked"];
    let denied = stowage(&denied, &[]).failed().expect("users without access to the mysql schema");
    assert!(
        denied.stderr.contains("option users: reading the accounts and their grants needs SELECT on the mysql schema")
    );

    // A user who may create accounts but not grant: the restore fails in users.sql, and
    // the database and the account it had created are gone again.
    let target = Mariadb::start().expect("second mariadb");
    target
        .sql(
            "",
            "CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY 'admin-secret'; GRANT ALL ON *.* TO 'admin'@'127.0.0.1'",
        )
        .expect("admin without GRANT OPTION");
    let as_admin = target.url("admin", "admin-secret", "copy");
    let restore =
        ["restore", "--plugin", "mysql", "--database", &as_admin, "--repo", &repo, "--option", "create-users=true"];
    let failed = stowage(&restore, &[]).failed().expect("restore without GRANT OPTION");
    assert!(failed.stderr.contains("users.sql") && failed.stderr.contains("database copy was dropped again"));
    let accounts = "SELECT COUNT(*) FROM mysql.user WHERE User IN ('app', 'reporter')";
    assert_eq!(target.sql("", accounts).expect("accounts").trim(), "0", "the accounts it created are dropped");

    let restore = ["restore", "--plugin", "mysql", "--database", &url(&target, "copy"), "--repo", &repo];
    let restored = stowage(&[&restore[..], &["--option", "create-users=true"]].concat(), &[]).ok().expect("restore");
    assert!(restored.stdout.contains("; 2 accounts created"), "{}", restored.stdout);
    for account in ["'app'@'127.0.0.1'", "'reporter'@'%'"] {
        assert_eq!(grants(&target, account, "copy"), grants(&source, account, "shop"), "{account}");
    }
    assert!(reads_orders(&target, "app", "app-secret", "copy"), "the account logs in with its password");
    assert_eq!(
        target.sql("", "SELECT COUNT(*) FROM mysql.user WHERE User = 'elsewhere'").expect("elsewhere").trim(),
        "0"
    );

    // Locked accounts: created without a password, so nobody logs in before an
    // administrator sets one; an account the server has keeps its password.
    stowage(&[&backup[..], &["--option", "users=locked"]].concat(), &[]).ok().expect("backup with locked accounts");
    target.sql("", "DROP USER 'reporter'@'%'").expect("drop reporter");
    let restore = ["restore", "--plugin", "mysql", "--database", &url(&target, "copy2"), "--repo", &repo];
    let restored = stowage(&[&restore[..], &["--option", "create-users=true"]].concat(), &[]).ok().expect("restore");
    assert!(restored.stdout.contains("; 1 accounts created"), "{}", restored.stdout);
    let reporter = target.sql("", "SHOW CREATE USER 'reporter'@'%'").expect("reporter");
    assert!(reporter.contains("ACCOUNT LOCK") && !reporter.contains("PASSWORD"), "{reporter}");
    assert!(reads_orders(&target, "app", "app-secret", "copy2"), "app keeps its password and gains copy2");

    // A backup without accounts says so when asked for them.
    stowage(&backup, &[]).ok().expect("backup without accounts");
    let restore = ["restore", "--plugin", "mysql", "--database", &url(&target, "copy3"), "--repo", &repo];
    let refused = stowage(&[&restore[..], &["--option", "create-users=true"]].concat(), &[]);
    assert!(refused.failed().expect("no users.sql").stderr.contains("it was taken with option users=none"));
}

#[test]
fn tls_connections_encrypt_and_verify_what_they_promise() {
    let server = Mariadb::start_tls_only().expect("mariadb with TLS");
    server.sql("", "CREATE DATABASE app; CREATE TABLE app.t (x INT); INSERT INTO app.t VALUES (42)").expect("data");
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    let ca_option = format!("tls-ca={}", server.ca.clone().expect("CA"));
    let run_with = |verb: &str, host: &str, database: &str, mode: &str, ca: bool| {
        let url = format!("mysql://{USER}:{PASSWORD}@{host}:{}/{database}?tls={mode}", server.port);
        let mut args = vec![verb, "--plugin", "mysql", "--database", &url, "--repo", &repo_url];
        if ca {
            args.extend(["--option", &ca_option]);
        }
        stowage(&args, &[])
    };
    // The server refuses unencrypted logins, so every success went over TLS.
    run_with("backup", "localhost", "app", "verify-identity", true).ok().expect("verify-identity");
    run_with("backup", "127.0.0.1", "app", "verify-ca", true).ok().expect("verify-ca");
    run_with("backup", "127.0.0.1", "app", "preferred", false).ok().expect("preferred");
    let wrong_name = run_with("backup", "127.0.0.1", "app", "verify-identity", true).failed().expect("by IP");
    assert!(wrong_name.stderr.contains("certificate not valid for name \"127.0.0.1\""), "{}", wrong_name.stderr);
    let no_ca = run_with("backup", "localhost", "app", "verify-ca", false).failed().expect("verify-ca without a CA");
    assert!(no_ca.stderr.contains("needs its CA in option tls-ca"), "{}", no_ca.stderr);
    let plain = run_with("backup", "127.0.0.1", "app", "disabled", false).failed().expect("plaintext");
    // MariaDB answers a plaintext login under require_secure_transport as a wrong password.
    assert!(plain.stderr.contains("Access denied for user 'stowage'"), "{}", plain.stderr);
    assert!(!plain.stderr.contains("panicked"), "{}", plain.stderr);

    run_with("restore", "localhost", "copy", "verify-identity", true).ok().expect("restore over verified TLS");
    assert_eq!(server.sql("copy", "SELECT x FROM t").expect("copy").trim(), "42");
}

#[test]
fn a_server_killed_mid_backup_is_the_reason_and_nothing_is_committed() {
    let mut server = Mariadb::start().expect("mariadb");
    server.sql("", "CREATE DATABASE big").expect("database");
    server
        .sql("big", "CREATE TABLE bulk (id INT PRIMARY KEY, pad VARCHAR(200)) SELECT seq AS id, REPEAT('x', 200) AS pad FROM seq_1_to_1000000")
        .expect("table");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    let backup = command(["backup", "--plugin", "mysql", "--database", &url(&server, "big"), "--repo", &repo], &[])
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("backup");
    wait_until("the backup copies the table", Duration::from_secs(120), || {
        server
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT `id`,`pad` FROM `big`.`bulk`'",
            )
            .is_ok_and(|n| n.trim() == "1")
    })
    .expect("copying");
    server.crash().expect("crash");
    let output: Run = backup.wait_with_output().expect("wait").into();
    let failed = output.failed().expect("the backup fails");
    assert!(failed.stderr.contains("copying table bulk: the connection to the server was lost"), "{}", failed.stderr);
    assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
    let listed = stowage(&["list", "--repo", &repo], &[]).ok().expect("list");
    assert!(!listed.stdout.contains("complete"), "nothing was committed: {}", listed.stdout);
}

#[test]
fn an_ed25519_user_logs_in_and_a_wrong_password_is_named() {
    let server = Mariadb::start().expect("mariadb");
    server
        .sql(
            "",
            "INSTALL SONAME 'auth_ed25519';
             CREATE DATABASE app; CREATE TABLE app.t (x INT); INSERT INTO app.t VALUES (7);
             CREATE USER 'edward'@'127.0.0.1' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret');
             GRANT ALL ON *.* TO 'edward'@'127.0.0.1';",
        )
        .expect("ed25519 user");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    let edward = server.url("edward", "ed-secret", "app");
    stowage(&["backup", "--plugin", "mysql", "--database", &edward, "--repo", &repo], &[]).ok().expect("backup");
    let copy = server.url("edward", "ed-secret", "copy");
    stowage(&["restore", "--plugin", "mysql", "--database", &copy, "--repo", &repo], &[]).ok().expect("restore");
    assert_eq!(server.sql("copy", "SELECT x FROM t").expect("copy").trim(), "7");
    let wrong = server.url("edward", "not-ed-secret", "app");
    let denied = stowage(&["backup", "--plugin", "mysql", "--database", &wrong, "--repo", &repo], &[])
        .failed()
        .expect("wrong password");
    assert!(denied.stderr.contains("authentication failed: user \"edward\""), "{}", denied.stderr);
    assert!(!denied.stderr.contains("panicked"), "{}", denied.stderr);
}

#[test]
fn a_row_larger_than_the_targets_max_allowed_packet_is_named_and_then_restores_whole() {
    let server = Mariadb::start().expect("mariadb");
    let big = "CREATE DATABASE big; CREATE TABLE big.b (id INT PRIMARY KEY, v LONGBLOB);
               INSERT INTO big.b VALUES (1, REPEAT('x', 20000000)), (2, 'small')";
    server.sql("", "SET GLOBAL max_allowed_packet = 67108864").expect("64 MiB");
    server.sql("", big).expect("a 20 MB row");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    stowage(&["backup", "--plugin", "mysql", "--database", &url(&server, "big"), "--repo", &repo], &[])
        .ok()
        .expect("backup");
    let restore = ["restore", "--plugin", "mysql", "--database", &url(&server, "copy"), "--repo", &repo];
    server.sql("", "SET GLOBAL max_allowed_packet = 16777216").expect("16 MiB");
    let refused = stowage(&restore, &[]).failed().expect("too large for 16 MiB");
    assert!(
        refused.stderr.contains("data.00001.b.sql: a statement of 19.1 MiB (a row that large) is more than the server's max_allowed_packet of 16.0 MiB"),
        "{}",
        refused.stderr
    );
    server.sql("", "SET GLOBAL max_allowed_packet = 67108864").expect("64 MiB again");
    stowage(&restore, &[]).ok().expect("restore");
    let digest = "SELECT id, LENGTH(v), MD5(v) FROM b ORDER BY id";
    assert_eq!(server.sql("copy", digest).expect("copy"), server.sql("big", digest).expect("source"));
}

/// Three databases that reference each other (a foreign key and views across databases,
/// one on a database after its own), a table without snapshots, an awkward name, and an
/// account of one.
const THREE_DATABASES: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(20));
INSERT INTO shop.customers VALUES (1, 'ada'), (2, 'bob');
CREATE DATABASE crm CHARACTER SET latin1;
CREATE TABLE crm.contacts (id INT PRIMARY KEY, customer INT, FOREIGN KEY (customer) REFERENCES shop.customers (id));
INSERT INTO crm.contacts VALUES (10, 1), (11, 2);
CREATE TABLE crm.notes (id INT PRIMARY KEY, body TEXT) ENGINE = Aria;
INSERT INTO crm.notes VALUES (1, 'call back');
CREATE VIEW crm.named AS SELECT c.id, s.name FROM crm.contacts c JOIN shop.customers s ON s.id = c.customer;
CREATE DATABASE `odd.name`;
CREATE TABLE `odd.name`.t (x INT);
INSERT INTO `odd.name`.t VALUES (7);
CREATE VIEW crm.odd AS SELECT x FROM `odd.name`.t;
CREATE USER 'crm_app'@'127.0.0.1' IDENTIFIED BY 'crm-secret';
GRANT SELECT ON crm.* TO 'crm_app'@'127.0.0.1';";

const DATABASES: [&str; 3] = ["shop", "crm", "odd.name"];

#[test]
fn several_databases_are_one_backup_and_each_restores_where_asked() {
    let source = Mariadb::start().expect("mariadb");
    source.sql("", THREE_DATABASES).expect("three databases");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    let backup = ["backup", "--plugin", "mysql", "--database", &url(&source, "shop"), "--repo", &repo];
    let missing = stowage(&[&backup[..], &["--option", "databases=crm,nowhere"]].concat(), &[]);
    let missing = missing.failed().expect("a database that is not there");
    assert!(missing.stderr.contains("there is no database \"nowhere\""), "{}", missing.stderr);
    stowage(&[&backup[..], &["--option", "databases=crm,odd.name", "--option", "users=with-passwords"]].concat(), &[])
        .ok()
        .expect("backup of three databases");
    let summary = &manifest(files.path())["summary"];
    assert_eq!(summary["attributes"]["databases"], "shop, crm, odd.name", "{summary}");
    assert_eq!(summary["attributes"]["consistency"], "backup-stage", "{summary}");
    assert!(summary["description"].as_str().expect("description").contains("4 tables (6 rows), 2 views"));
    // `*`: every database but the server's own, the named one first.
    let everything = tempfile::tempdir().expect("tempdir");
    let everything_repo = format!("file://{}", everything.path().display());
    let all = ["backup", "--plugin", "mysql", "--database", &url(&source, "odd.name"), "--repo", &everything_repo];
    stowage(&[&all[..], &["--option", "databases=*"]].concat(), &[]).ok().expect("backup of every database");
    assert_eq!(manifest(everything.path())["summary"]["attributes"]["databases"], "odd.name, crm, shop");

    let (data, names) = stored_artifacts(files.path());
    for name in ["databases.sql.zst", "db.00001.shop.schema.sql.zst", "db.00002.crm.users.sql.zst"] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("db.00003.odd_name.data.00001.t.")), "{names:?}");

    // The mariadb client alone, as docs/mysql.md says: the index creates the databases,
    // then every schema, every database's data, every post.sql.
    let by_hand = Mariadb::start().expect("second mariadb");
    by_hand.replay("", &unzstd(&data, "databases.sql.zst")).expect("the index");
    let prefixes: Vec<String> = DATABASES
        .iter()
        .enumerate()
        .map(|(n, database)| format!("db.{:05}.{}.", n + 1, database.replace('.', "_")))
        .collect();
    for part in ["schema.sql", "data.", "post.sql"] {
        for (database, prefix) in DATABASES.iter().zip(&prefixes) {
            let start = format!("{prefix}{part}");
            let script: Vec<u8> =
                names.iter().filter(|n| n.starts_with(&start)).flat_map(|n| unzstd(&data, n)).collect();
            by_hand.replay(database, &script).expect("replay with the mariadb client");
        }
    }
    for database in DATABASES {
        assert_eq!(by_hand.state(database, &[]).expect("state"), source.state(database, &[]).expect("state"));
    }

    let target = Mariadb::start().expect("third mariadb");
    let restore = |database: &str, options: &[&str]| {
        let restore = ["restore", "--plugin", "mysql", "--database", &url(&target, database), "--repo", &repo];
        let options: Vec<&str> = options.iter().flat_map(|option| ["--option", option]).collect();
        stowage(&[&restore[..], &options].concat(), &[])
    };
    // Without option databases, the first database goes into the one named.
    let first = restore("first", &[]).ok().expect("restore of the first database");
    assert!(first.stdout.contains("restored database shop as first: 1 tables (2 rows)"), "{}", first.stdout);
    assert!(first.stderr.contains("the backup holds databases shop, crm, odd.name"), "{}", first.stderr);
    let shop = source.state("shop", &[]).expect("state");
    assert_eq!(target.state("first", &[]).expect("state"), shop.replace("shop.", "first."));
    let unknown = restore("x", &["restore-databases=crm,nowhere"]).failed().expect("a database the backup lacks");
    assert!(
        unknown.stderr.contains("the backup has no database \"nowhere\"; it holds shop, crm, odd.name"),
        "{}",
        unknown.stderr
    );

    // All-or-nothing over databases: the second fails (this user may not create it),
    // and the first, already restored, is dropped again.
    target
        .sql("", "CREATE USER 'one'@'127.0.0.1' IDENTIFIED BY 'one-secret'; GRANT ALL ON s2.* TO 'one'@'127.0.0.1';")
        .expect("a user of one database");
    let as_one = target.url("one", "one-secret", "s2");
    let partial = ["restore", "--plugin", "mysql", "--database", &as_one, "--repo", &repo, "--option"];
    let failed = stowage(&[&partial[..], &["restore-databases=shop:s2,crm:c2"]].concat(), &[]).failed().expect("no c2");
    assert!(failed.stderr.contains("creating database c2"), "{}", failed.stderr);
    assert!(failed.stderr.contains("database s2 was dropped again"), "{}", failed.stderr);
    assert_eq!(target.sql("", "SHOW DATABASES LIKE 's2'").expect("databases"), "");

    // Every database under its own name, with the accounts.
    let all = restore("ignored", &["restore-databases=*", "create-users=true"]).ok().expect("restore of all");
    assert!(all.stdout.contains("restored databases shop, crm, odd.name: 4 tables (6 rows); 1 accounts created"));
    for database in DATABASES {
        assert_eq!(target.state(database, &[]).expect("state"), source.state(database, &[]).expect("state"));
    }
    assert_eq!(target.sql("crm", "SELECT name FROM named WHERE id = 11").expect("view").trim(), "bob");
    assert!(target.sql("", "SHOW GRANTS FOR 'crm_app'@'127.0.0.1'").expect("grants").contains("ON `crm`.*"));

    // One database under another name, beside the one it came from. A view that reads
    // another database names its own too (the server prints it so, as mariadb-dump
    // stores it): the copy's view still reads crm's contacts (docs/mysql.md).
    let copy = restore("ignored", &["restore-databases=crm:crm_copy"]).ok().expect("restore of crm as crm_copy");
    assert!(copy.stdout.contains("restored database crm as crm_copy: 2 tables (3 rows)"), "{}", copy.stdout);
    let crm = source.state("crm", &[]).expect("state");
    assert!(crm.contains("from (`crm`.`contacts` `c` join `shop`.`customers`"), "{crm}");
    assert_eq!(target.state("crm_copy", &[]).expect("state"), crm.replace("crm.", "crm_copy."));

    // Nothing changes unless every target is empty: crm is refused before shop is created.
    target.sql("", "SET foreign_key_checks = 0; DROP DATABASE shop").expect("drop shop");
    let refused = restore("ignored", &["restore-databases=*"]).failed().expect("targets not empty");
    assert!(refused.stderr.contains("target not empty: database \"crm\""), "{}", refused.stderr);
    assert_eq!(target.sql("", "SHOW DATABASES LIKE 'shop'").expect("databases"), "");
}

/// Database `shop` with MariaDB roles: two with privileges on it (one granted to the
/// other), a user holding one as default role, a user holding the other with admin
/// option, a role with privileges elsewhere only, and a grant to PUBLIC.
const SHOP_WITH_ROLES: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, total DECIMAL(10,2));
INSERT INTO shop.orders VALUES (1, 9.99), (2, 20.00);
CREATE ROLE reader;
GRANT SELECT ON shop.* TO reader;
CREATE ROLE senior;
GRANT reader TO senior;
GRANT INSERT ON shop.orders TO senior;
CREATE USER 'clerk'@'127.0.0.1' IDENTIFIED BY 'clerk-secret';
GRANT reader TO 'clerk'@'127.0.0.1';
SET DEFAULT ROLE reader FOR 'clerk'@'127.0.0.1';
CREATE USER 'boss'@'%' IDENTIFIED BY 'boss-secret';
GRANT senior TO 'boss'@'%' WITH ADMIN OPTION;
CREATE ROLE unrelated;
GRANT SELECT ON mysql.* TO unrelated;
GRANT SELECT (id) ON shop.orders TO PUBLIC;";

#[test]
fn mariadb_roles_travel_with_their_members_and_default_roles() {
    let source = Mariadb::start().expect("mariadb");
    source.sql("", SHOP_WITH_ROLES).expect("shop and its roles");
    let files = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", files.path().display());
    let backup = ["backup", "--plugin", "mysql", "--database", &url(&source, "shop"), "--repo", &repo];
    stowage(&[&backup[..], &["--option", "users=with-passwords"]].concat(), &[]).ok().expect("backup");

    let target = Mariadb::start().expect("second mariadb");
    let restore = ["restore", "--plugin", "mysql", "--database", &url(&target, "shop"), "--repo", &repo];
    let restored = stowage(&[&restore[..], &["--option", "create-users=true"]].concat(), &[]).ok().expect("restore");
    assert!(restored.stdout.contains("; 4 accounts created"), "{}", restored.stdout);
    for account in ["reader", "senior", "'clerk'@'127.0.0.1'", "'boss'@'%'", "PUBLIC"] {
        assert_eq!(grants(&target, account, "shop"), grants(&source, account, "shop"), "{account}");
    }
    assert!(grants(&target, "'clerk'@'127.0.0.1'", "shop").contains("SET DEFAULT ROLE `reader`"));
    // The default role is active at login: the user reads the orders through it.
    assert!(reads_orders(&target, "clerk", "clerk-secret", "shop"), "clerk reads through the reader role");
    let unrelated = "SELECT COUNT(*) FROM mysql.user WHERE User = 'unrelated'";
    assert_eq!(target.sql("", unrelated).expect("unrelated").trim(), "0", "a role without privileges on shop");
}
