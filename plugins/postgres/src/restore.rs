//! A restore: the sections replayed in one transaction, so a failure leaves the target
//! database as it was.

use std::io::{self, BufReader};

use stowage_plugin_sdk::{PluginError, Summary, artifacts, report, target_not_empty};

use crate::pick::Picking;
use crate::protocol::{ConnectOptions, Connection, Error, quote_identifier};
use crate::script::{self, Entry, ScriptReader};
use crate::tally::{self, TableRows};
use crate::{Config, READ_BUFFER, catalog, failure, roles};

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

/// A session in the maintenance database, for what cannot run in the target itself.
fn maintenance(config: &Config) -> Result<Connection, PluginError> {
    let options = ConnectOptions { database: "postgres".into(), ..config.connect.clone() };
    Connection::connect(&options).map_err(|e| config.connect_error(e))
}

/// Connect to the target database, creating it first when it does not exist and the
/// user may create databases; whether it was created.
fn connect_or_create(config: &Config) -> Result<(Connection, bool), PluginError> {
    let database = &config.connect.database;
    match Connection::connect(&config.connect) {
        Ok(connection) => Ok((connection, false)),
        Err(error) if error.code() == Some("3D000") => {
            let mut admin = maintenance(config)?;
            admin
                .execute(&format!("CREATE DATABASE {}", quote_identifier(database)))
                .map_err(|e| failure(&format!("database {database:?} does not exist, and creating it failed"), e))?;
            admin.close();
            report::info(&format!("created database {database}"));
            match config.connect() {
                Ok(connection) => Ok((connection, true)),
                Err(error) => Err(drop_created(config, error)),
            }
        }
        Err(error) => Err(config.connect_error(error)),
    }
}

/// After a failed restore into a database it created (the transaction has undone the
/// rest): drop that database again; the error says so.
fn drop_created(config: &Config, error: PluginError) -> PluginError {
    let database = &config.connect.database;
    let dropped = maintenance(config).and_then(|mut admin| {
        let done = admin
            .execute(&format!("DROP DATABASE {}", quote_identifier(database)))
            .map_err(|e| failure("dropping it", e));
        admin.close();
        done
    });
    match dropped {
        Ok(_) => error.noting(&format!("database {database}, created by this restore, was dropped again")),
        Err(drop) => error
            .noting(&format!("database {database} was created by this restore and is left empty ({})", drop.message())),
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
    let (mut connection, created) = connect_or_create(config)?;
    let restored = restore(config, &mut connection, replace_existing, &names, &sections, picking.as_ref());
    connection.close();
    match restored {
        Err(error) if created => Err(drop_created(config, error)),
        restored => restored,
    }
}

/// Everything after connecting, in one transaction; `picking` for a partial restore.
fn restore(
    config: &Config,
    connection: &mut Connection,
    replace_existing: bool,
    names: &[String],
    sections: &[String],
    picking: Option<&Picking>,
) -> Result<Summary, PluginError> {
    let database = config.connect.database.as_str();
    let pick = &config.pick;
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

    let (mut tables, mut rows) = (0u64, 0u64);
    let mut table_rows = TableRows::default();
    for (position, section) in sections.iter().enumerate() {
        if picking.is_some_and(|picking| picking.skips_section(section)) {
            continue;
        }
        let reader = BufReader::with_capacity(READ_BUFFER, artifacts::open(section)?);
        let mut script = ScriptReader::new(reader);
        while let Some(entry) = script.next_entry().map_err(artifact_error)? {
            match entry {
                Entry::Sql { what, sql, scope } => {
                    if catalog::Optional::of(&what).is_some_and(|part| config.restore_without.contains(&part)) {
                        continue;
                    }
                    if picking.is_some_and(|picking| !picking.runs(&what, scope.as_ref())) {
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
                Entry::Copy { what, sql, scope } => {
                    if picking.is_some_and(|picking| !picking.runs(&what, scope.as_ref())) {
                        script.rows(|_| Ok::<(), io::Error>(())).map_err(artifact_error)?;
                        continue;
                    }
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
