//! A restore: the sections replayed in one transaction, so a failure leaves the target
//! database as it was.

use std::io::{self, BufReader};

use stowage_plugin_sdk::{PluginError, Summary, artifacts, report, target_not_empty};

use crate::protocol::{ConnectOptions, Connection, Error, quote_identifier};
use crate::script::{self, Entry, ScriptReader};
use crate::tally::{self, TableRows};
use crate::{Config, catalog, failure, roles};

/// Bytes read from an artifact at a time.
const READ_BUFFER: usize = 256 * 1024;

/// Characters of a failing statement quoted in the error.
const EXCERPT: usize = 300;

/// Why loading rows stopped.
enum RowsError {
    Artifact(io::Error),
    Database(Error),
}

impl From<io::Error> for RowsError {
    fn from(error: io::Error) -> Self {
        RowsError::Artifact(error)
    }
}

fn artifact_error(error: io::Error) -> PluginError {
    PluginError::Artifact(error.to_string())
}

fn statement_failure(what: &str, sql: &str, error: Error) -> PluginError {
    let mut excerpt: String = sql.chars().take(EXCERPT).collect();
    if excerpt.len() < sql.len() {
        excerpt.push_str("...");
    }
    failure(&format!("restoring {what} (statement: {excerpt})"), error)
}

/// Connect to the target database, creating it first when it does not exist and the
/// user may create databases.
fn connect_or_create(config: &Config) -> Result<Connection, PluginError> {
    let database = &config.connect.database;
    match Connection::connect(&config.connect) {
        Ok(connection) => Ok(connection),
        Err(error) if error.code() == Some("3D000") => {
            let maintenance = ConnectOptions { database: "postgres".into(), ..config.connect.clone() };
            let mut admin = Connection::connect(&maintenance).map_err(|e| config.connect_error(e))?;
            admin
                .execute(&format!("CREATE DATABASE {}", quote_identifier(database)))
                .map_err(|e| failure(&format!("database {database:?} does not exist, and creating it failed"), e))?;
            admin.close();
            report::info(&format!("created database {database}"));
            config.connect()
        }
        Err(error) => Err(config.connect_error(error)),
    }
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
    let database = config.connect.database.as_str();
    let names: Vec<String> = artifacts::list().into_iter().map(|artifact| artifact.name).collect();
    let sections = script::replay_order(&names).ok_or_else(|| {
        PluginError::Artifact(format!(
            "the backup has no {} and {}: it is not a PostgreSQL plugin backup",
            script::PRE_DATA,
            script::POST_DATA
        ))
    })?;
    let mut connection = connect_or_create(config)?;
    let existing = catalog::user_objects(&mut connection).map_err(|e| failure("inspecting the target database", e))?;
    connection.execute("BEGIN").map_err(|e| failure("starting the restore transaction", e))?;
    if existing > 0 {
        if !replace_existing {
            return Err(target_not_empty(&format!("database {database:?} has {existing} user objects")));
        }
        report::warn(&format!("replacing the {existing} user objects of database {database}"));
        let clear = catalog::clear_statements(&mut connection).map_err(|e| failure("listing what to replace", e))?;
        for statement in clear {
            connection.execute(&statement).map_err(|e| statement_failure("clearing the database", &statement, e))?;
        }
    }

    let roles = if config.create_roles { create_roles(&mut connection, &names)? } else { roles::Applied::default() };

    let (mut tables, mut rows) = (0u64, 0u64);
    let mut table_rows = TableRows::default();
    for (position, section) in sections.iter().enumerate() {
        let reader = BufReader::with_capacity(READ_BUFFER, artifacts::open(section)?);
        let mut script = ScriptReader::new(reader);
        while let Some(entry) = script.next_entry().map_err(artifact_error)? {
            match entry {
                Entry::Sql { what, sql } => {
                    if catalog::Optional::of(&what).is_some_and(|part| config.restore_without.contains(&part)) {
                        continue;
                    }
                    // Every section starts with the same settings, for psql; one transaction
                    // needs them once (a round trip each, per table otherwise).
                    if position > 0 && what == script::SETTING {
                        continue;
                    }
                    let done = connection.execute(&sql);
                    if catalog::is_role_check(&what) {
                        // Its message names the roles; the statement would add only noise.
                        done.map_err(|e| failure("checking the roles the backup uses", e))?;
                    } else {
                        done.map_err(|e| statement_failure(&what, &sql, e))?;
                    }
                }
                Entry::Copy { what, sql } => {
                    connection.copy_in(&sql).map_err(|e| statement_failure(&what, &sql, e))?;
                    let loaded = script
                        .rows(|batch| connection.copy_data(batch).map_err(RowsError::Database))
                        .map_err(|error| match error {
                            RowsError::Artifact(error) => artifact_error(error),
                            RowsError::Database(error) => failure(&format!("loading {what}"), error),
                        })?;
                    connection.copy_done().map_err(|e| failure(&format!("loading {what}"), e))?;
                    tables += 1;
                    rows += loaded;
                    table_rows.add(&what, loaded);
                    report::progress(&what, tables, None, rows);
                }
            }
        }
    }
    connection.execute("COMMIT").map_err(|e| failure("committing the restore", e))?;
    connection.close();
    Ok(Summary {
        description: if config.create_roles {
            format!(
                "database {database}: {tables} tables, {rows} rows restored; roles: {} created, {} already present",
                roles.created, roles.existing
            )
        } else {
            format!("database {database}: {tables} tables, {rows} rows restored")
        },
        attributes: vec![
            ("tables".into(), tables.to_string()),
            ("rows".into(), rows.to_string()),
            ("roles_created".into(), roles.created.to_string()),
            (tally::ATTRIBUTE.into(), table_rows.digest()),
        ],
    })
}
