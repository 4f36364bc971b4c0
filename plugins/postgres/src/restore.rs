//! A restore: the sections replayed in one transaction, so a failure leaves the target
//! database as it was. A target that does not exist is created; with option `jobs` above
//! 1 it is built under a name of its own (`<target>-stowage-restore`), the data artifacts
//! loading and then the indexes building on several sessions at once, each committed on
//! its own ([`builds`]), and renamed to the target once complete: the target name only
//! ever holds a complete restore, also when the restore is killed half-way (the staging
//! database is then left, named for what it is, and the next restore asks for it to be
//! dropped).

use std::io::BufReader;

use sha2::{Digest, Sha256};

use stowage_plugin_sdk::{PluginError, Summary, artifacts, report, sessions, target_not_empty};

use crate::pick::Picking;
use crate::protocol::{ConnectOptions, Connection, quote_identifier};
use crate::replay::{Loaded, Replaying, Section, statement_failure};
use crate::script::{self, ScriptReader};
use crate::tally;
use crate::{Config, READ_BUFFER, builds, catalog, failure, roles};

/// A session in the maintenance database, for what cannot run in the target itself.
fn maintenance(config: &Config) -> Result<Connection, PluginError> {
    let options = ConnectOptions { database: "postgres".into(), ..config.connect.clone() };
    Connection::connect(&options).map_err(|e| config.connect_error(e))
}

/// `CREATE DATABASE name` on the maintenance database; `staging` when `name` is the
/// staging name of the target.
fn create_database(config: &Config, name: &str, staging: bool) -> Result<(), PluginError> {
    let mut admin = maintenance(config)?;
    let created = admin.execute(&format!("CREATE DATABASE {}", quote_identifier(name)));
    admin.close();
    created.map_err(|error| match error.code() {
        Some("42P04") if staging => PluginError::Unsupported(format!(
            "database {name:?} exists: a restore into {:?} was interrupted while it built it there; drop it and \
             restore again",
            config.connect.database
        )),
        _ => failure(&format!("database {:?} does not exist, and creating it failed", config.connect.database), error),
    })?;
    report::info(&format!("created database {name}"));
    Ok(())
}

/// After a failed restore into database `name`, which it created: drop it again; the
/// error says so. A staging database is dropped `WITH (FORCE)` (PostgreSQL 13+): the
/// load sessions of a parallel restore may still be ending.
fn drop_created(config: &Config, name: &str, staging: bool, error: PluginError) -> PluginError {
    let force = if staging { " WITH (FORCE)" } else { "" };
    let dropped = maintenance(config).and_then(|mut admin| {
        let done = admin
            .execute(&format!("DROP DATABASE {}{force}", quote_identifier(name)))
            .map_err(|e| failure("dropping it", e));
        admin.close();
        done
    });
    match dropped {
        Ok(_) => error.noting(&format!("database {name}, created by this restore, was dropped again")),
        Err(drop) => error.noting(&format!(
            "database {name} was created by this restore and is left with what it restored; drop it ({})",
            drop.message()
        )),
    }
}

/// The name a parallel restore builds `target` under: the target's and a suffix no
/// restore target is given by accident. A name too long for PostgreSQL's 63 bytes is cut
/// and keeps a hash of the whole, so that targets sharing a long prefix stage apart.
fn staging_name(target: &str) -> String {
    const SUFFIX: &str = "-stowage-restore";
    const LIMIT: usize = 63;
    if target.len() + SUFFIX.len() <= LIMIT {
        return format!("{target}{SUFFIX}");
    }
    let hash: String = Sha256::digest(target.as_bytes()).iter().take(4).map(|byte| format!("{byte:02x}")).collect();
    let mut name = String::new();
    for c in target.chars() {
        if name.len() + c.len_utf8() + 1 + hash.len() + SUFFIX.len() > LIMIT {
            break;
        }
        name.push(c);
    }
    format!("{name}-{hash}{SUFFIX}")
}

/// Apply the backup's `roles.sql` (option `create-roles`), in the restore's transaction;
/// `names` are the backup's artifacts.
fn create_roles(connection: &mut Connection, names: &[String]) -> Result<roles::Applied, PluginError> {
    if !names.iter().any(|name| name == roles::ARTIFACT) {
        return Err(PluginError::Unsupported(format!(
            "option create-roles: the backup has no {}: it was taken with option roles=none, or by a plugin \
             version without roles",
            roles::ARTIFACT
        )));
    }
    let mut script = ScriptReader::new(BufReader::with_capacity(READ_BUFFER, artifacts::open(roles::ARTIFACT)?));
    roles::apply(connection, &mut script)
}

pub fn run(config: &Config, replace_existing: bool) -> Result<Summary, PluginError> {
    let names: Vec<String> = artifacts::list().into_iter().map(|artifact| artifact.name).collect();
    let sections = script::replay_order(&names).ok_or_else(|| {
        PluginError::Artifact(format!(
            "the backup has no {} and {}: it is not a PostgreSQL plugin backup",
            script::PRE_DATA,
            script::POST_DATA
        ))
    })?;
    let pick = &config.pick;
    if pick.is_partial() && replace_existing {
        return Err(PluginError::InvalidSettings(
            "replace with restore-schemas, restore-tables or restore-exclude-tables: a partial restore adds to the \
             target and drops nothing; drop what it restores first, or restore into another database"
                .into(),
        ));
    }
    // Before anything changes: what a partial restore picks is in the backup.
    let picking = if pick.is_partial() { Some(Picking::survey(pick)?) } else { None };
    let request = Request { replace_existing, names: &names, sections: &sections, picking: picking.as_ref() };
    let target = config.connect.database.as_str();
    match Connection::connect(&config.connect) {
        Ok(mut connection) => {
            let restored = restore(config, &mut connection, request, false, target);
            connection.close();
            restored
        }
        Err(error) if error.code() == Some("3D000") => restore_created(config, request),
        Err(error) => Err(config.connect_error(error)),
    }
}

/// What a restore replays, and into what.
#[derive(Clone, Copy)]
struct Request<'a> {
    replace_existing: bool,
    /// The backup's artifacts.
    names: &'a [String],
    /// Its sections in replay order.
    sections: &'a [String],
    /// For a partial restore.
    picking: Option<&'a Picking<'a>>,
}

/// Restore into a database that does not exist yet: created, and dropped again on
/// failure. In parallel (`jobs` above 1; not with `create-roles`, whose roles are the
/// cluster's and undone only by the one transaction) under its staging name, renamed to
/// the target once complete.
fn restore_created(config: &Config, request: Request<'_>) -> Result<Summary, PluginError> {
    let target = config.connect.database.clone();
    let parallel = !config.create_roles && config.jobs > 1;
    let building = if parallel { staging_name(&target) } else { target.clone() };
    create_database(config, &building, parallel)?;
    let mut staged = config.clone();
    staged.connect.database = building.clone();
    let restored = staged.connect().and_then(|mut connection| {
        let restored = restore(&staged, &mut connection, request, parallel, &target);
        connection.close();
        restored
    });
    let restored = restored.and_then(|summary| {
        if parallel {
            let mut admin = maintenance(config)?;
            let renamed = admin.execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_identifier(&building),
                quote_identifier(&target)
            ));
            admin.close();
            renamed.map_err(|e| failure(&format!("renaming database {building} to {target}"), e))?;
            report::info(&format!("renamed database {building}, restored complete, to {target}"));
        }
        Ok(summary)
    });
    restored.map_err(|error| drop_created(config, &building, parallel, error))
}

/// Everything after connecting, in one transaction, into `database` (as messages name
/// it); `parallel` to load the data and build the indexes on several sessions, each
/// committing on its own ([`in_parallel`]).
fn restore(
    config: &Config,
    connection: &mut Connection,
    request: Request<'_>,
    parallel: bool,
    database: &str,
) -> Result<Summary, PluginError> {
    let Request { replace_existing, names, sections, picking } = request;
    let pick = &config.pick;
    without_session_timeouts(connection)?;
    let existing = catalog::user_objects(connection).map_err(|e| failure("inspecting the target database", e))?;
    connection.execute("BEGIN").map_err(|e| failure("starting the restore transaction", e))?;
    // A partial restore adds to what the target has: an object it already has fails
    // the restore at its CREATE, and the transaction undoes everything.
    if existing > 0 && !pick.is_partial() {
        if !replace_existing {
            return Err(target_not_empty(&format!("database {database:?} has {existing} user objects")));
        }
        report::warn(&format!("replacing the {existing} user objects of database {database}"));
        let clear = catalog::clear_statements(connection).map_err(|e| failure("listing what to replace", e))?;
        for statement in clear {
            connection.execute(&statement).map_err(|e| statement_failure("clearing the database", &statement, e))?;
        }
    }

    let roles = if config.create_roles { create_roles(connection, names)? } else { roles::Applied::default() };

    let replaying = Replaying { config, picking };
    let mut loaded = Loaded::default();
    let sections: Vec<&String> =
        sections.iter().filter(|section| !picking.is_some_and(|picking| picking.skips_section(section))).collect();
    if parallel {
        in_parallel(config, connection, replaying, &sections, names, &mut loaded)?;
    } else {
        for (position, section) in sections.iter().enumerate() {
            Section::open(section, position > 0)?.run(connection, replaying, &mut loaded)?;
        }
        connection.execute("COMMIT").map_err(|e| failure("committing the restore", e))?;
    }
    let Loaded { rows, table_rows, .. } = loaded;
    let tables = table_rows.tables();
    let mut description = format!("database {database}: {tables} tables, {rows} rows restored");
    if pick.is_partial() {
        description.push_str(&format!(" ({})", pick.describe()));
    }
    if config.create_roles {
        description.push_str(&format!("; roles: {} created, {} already present", roles.created, roles.existing));
    }
    Ok(Summary {
        description,
        attributes: vec![
            ("tables".into(), tables.to_string()),
            ("rows".into(), rows.to_string()),
            ("roles_created".into(), roles.created.to_string()),
            (tally::ATTRIBUTE.into(), table_rows.digest()),
        ],
    })
}

/// The session timeouts off for this session, whatever the role or database sets:
/// PostgreSQL 17's `transaction_timeout` (a restore is one long transaction) and 14's
/// `idle_session_timeout` (a parallel restore's sessions wait while another works). One
/// statement, which sets only what the server has.
fn without_session_timeouts(session: &mut Connection) -> Result<(), PluginError> {
    session
        .execute(
            "SELECT pg_catalog.set_config(name, '0', false) FROM (VALUES ('transaction_timeout', 170000), \
             ('idle_session_timeout', 140000)) AS t(name, since) \
             WHERE pg_catalog.current_setting('server_version_num')::int >= since",
        )
        .map_err(|e| failure("setting up the session", e))
}

/// The `sections` of a parallel restore, pre-data begun on `connection` in a transaction:
/// pre-data committed, the data artifacts loaded on `connection` and up to `jobs - 1` more
/// sessions, an artifact each at a time (in autocommit: the database is dropped on
/// failure), the large objects in a transaction, post-data's builds on every session.
fn in_parallel(
    config: &Config,
    connection: &mut Connection,
    replaying: Replaying<'_>,
    sections: &[&String],
    names: &[String],
    loaded: &mut Loaded,
) -> Result<(), PluginError> {
    let data_names = artifacts::series(names, script::DATA);
    let (data, schema): (Vec<&String>, Vec<&String>) =
        sections.iter().partition(|section| data_names.contains(section));
    let Some((pre_data, after_data)) = schema.split_first() else {
        return Err(PluginError::Artifact(format!("the backup has no {}", script::PRE_DATA)));
    };
    Section::open(pre_data, false)?.run(connection, replaying, loaded)?;
    connection.execute("COMMIT").map_err(|e| failure("committing the schema", e))?;
    let mut others = sessions::open_more(config.jobs.saturating_sub(1), "restoring", || {
        let mut session = config.connect()?;
        without_session_timeouts(&mut session)?;
        Ok(session)
    });
    let done = (|| {
        let mut lanes: Vec<Lane> = std::iter::once(Lane { session: &mut *connection, settled: true, section: None })
            .chain(others.iter_mut().map(|session| Lane { session, settled: false, section: None }))
            .collect();
        load_round_robin(&mut lanes, replaying, &data, loaded)?;
        drop(lanes);
        for section in after_data {
            if section.as_str() == script::POST_DATA {
                builds::run(connection, &mut others, replaying, loaded)?;
            } else {
                connection.execute("BEGIN").map_err(|e| failure("starting the transaction after the data", e))?;
                Section::open(section, true)?.run(connection, replaying, loaded)?;
                connection.execute("COMMIT").map_err(|e| failure(&format!("committing {section}"), e))?;
            }
        }
        Ok(())
    })();
    for other in others {
        other.close();
    }
    done
}

/// A session loading data artifacts.
struct Lane<'s> {
    session: &'s mut Connection,
    /// Whether the session has the settings every section starts with.
    settled: bool,
    section: Option<Section>,
}

/// Take turns: while one session's server process writes rows, the next batch of
/// another's is read and sent.
fn load_round_robin(
    lanes: &mut [Lane<'_>],
    replaying: Replaying<'_>,
    data: &[&String],
    loaded: &mut Loaded,
) -> Result<(), PluginError> {
    let mut queue = data.iter();
    loop {
        let mut busy = false;
        for lane in lanes.iter_mut() {
            if lane.section.is_none()
                && let Some(name) = queue.next()
            {
                lane.section = Some(Section::open(name, lane.settled)?);
                lane.settled = true;
            }
            let Some(section) = &mut lane.section else { continue };
            busy = true;
            if section.step(lane.session, replaying, loaded)? {
                lane.section = None;
            }
        }
        if !busy {
            return Ok(());
        }
    }
}
