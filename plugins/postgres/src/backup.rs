//! A backup: one snapshot, its sections (see [`crate::script`]).

use stowage_plugin_sdk::artifacts::{self, ArtifactWriter};
use stowage_plugin_sdk::{PluginError, Summary, report};

use crate::catalog::{self, Statement};
use crate::copying::{self, Copied};
use crate::pieces::{self, DataArtifact};
use crate::protocol::{Connection, Error};
use crate::roles::{self, RolesArtifact};
use crate::script::{LARGE_OBJECTS, MEDIA_TYPE, POST_DATA, PRE_DATA, ScriptWriter};
use crate::tally;
use crate::{Config, artifact_error, failure};

/// `server_version_num` of PostgreSQL 15, the oldest release still supported upstream
/// (14 reached its end of life in November 2026); the catalog queries read columns and
/// catalogs that 15 introduced (publication column lists and schemas).
const MINIMUM_SERVER_VERSION: u32 = 150_000;

/// `server_version_num` of the first release whose catalogs the queries do not know.
/// PostgreSQL 18 added what they would silently get wrong (virtual generated columns,
/// `attgenerated = 'v'`, would come back as plain columns with a default; named NOT NULL
/// constraints would lose their names), so a newer server is refused rather than backed
/// up incompletely, as pg_dump refuses a server newer than itself.
const FIRST_UNKNOWN_SERVER_VERSION: u32 = 180_000;

/// Bytes of a large object read, and written as one statement, at a time.
const LARGE_OBJECT_CHUNK: u64 = 1024 * 1024;

fn start_section(name: &str, database: &str) -> Result<ScriptWriter<ArtifactWriter>, PluginError> {
    ScriptWriter::new(artifacts::create(name, MEDIA_TYPE)?, name, database).map_err(artifact_error)
}

/// Section `name` of `statements`, after the lines that say which tables each data
/// artifact of `data` holds (pre-data's; none for the other sections).
fn statements_section(
    name: &str,
    database: &str,
    statements: &[Statement],
    data: &[DataArtifact<'_>],
) -> Result<(), PluginError> {
    let mut section = start_section(name, database)?;
    for artifact in data {
        for scope in artifact.parts.iter().filter_map(|part| part.table.scope.as_ref()) {
            section.data_index(&artifact.name, scope).map_err(artifact_error)?;
        }
    }
    for statement in statements {
        section.statement(&statement.description, &statement.sql, statement.scope.as_ref()).map_err(artifact_error)?;
    }
    section.into_inner().finish()?;
    Ok(())
}

/// Write the contents of large object `oid` as `lo_put` statements of at most
/// [`LARGE_OBJECT_CHUNK`] bytes, so that no side ever holds a whole object; returns its size.
fn copy_large_object(
    connection: &mut Connection,
    oid: u32,
    data: &mut ScriptWriter<ArtifactWriter>,
) -> Result<u64, PluginError> {
    let mut offset = 0u64;
    loop {
        let hex = connection
            .query_value(&format!("SELECT encode(pg_catalog.lo_get({oid}, {offset}, {LARGE_OBJECT_CHUNK}), 'hex')"))
            .map_err(|e| failure(&format!("reading large object {oid}"), e))?
            .unwrap_or_default();
        let length = hex.len() as u64 / 2;
        if length > 0 {
            let sql = format!("SELECT pg_catalog.lo_put({oid}, {offset}, '\\x{hex}');");
            data.statement(&format!("LARGE OBJECT DATA {oid}"), &sql, None).map_err(artifact_error)?;
        }
        offset += length;
        if length < LARGE_OBJECT_CHUNK {
            return Ok(offset);
        }
    }
}

pub fn run(config: &Config) -> Result<Summary, PluginError> {
    let database = config.connect.database.as_str();
    let mut connection = config.connect()?;
    let version =
        connection.query_value("SHOW server_version_num").map_err(|e| failure("reading the server version", e))?;
    let version: u32 = version.and_then(|v| v.parse().ok()).unwrap_or(0);
    if version < MINIMUM_SERVER_VERSION {
        return Err(PluginError::Unsupported(format!(
            "PostgreSQL {} is older than 15, the oldest version this plugin backs up",
            connection.server_version
        )));
    }
    if version >= FIRST_UNKNOWN_SERVER_VERSION {
        return Err(PluginError::Unsupported(format!(
            "PostgreSQL {} is newer than 17, the newest version this plugin knows the catalogs of; nothing was \
             backed up (a backup that misses what 18 added would look complete)",
            connection.server_version
        )));
    }
    // One snapshot for the catalog and every table; read-only, so it never blocks writers.
    connection
        .execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {}",
            copying::session_settings(&config.lock_timeout, version)
        ))
        .map_err(|e| failure("starting the snapshot", e))?;
    let catalog = catalog::read(&mut connection, &config.selection).map_err(|e| failure("reading the catalog", e))?;
    let roles = roles::read(&mut connection, config.roles).map_err(|error| match (&error, config.roles) {
        (Error::Server(server), RolesArtifact::WithPasswords) if server.code == "42501" => {
            PluginError::InvalidSettings(format!(
                "option roles=with-passwords: reading password hashes (pg_authid) needs a superuser: {error}"
            ))
        }
        _ => failure("reading the roles", error),
    })?;
    if config.roles != RolesArtifact::None {
        statements_section(roles::ARTIFACT, database, &roles.statements, &[])?;
    }
    for object in &catalog.cyclic {
        report::warn(&format!("{object} is part of a dependency cycle; it is created in catalog order"));
    }
    report::info(&format!(
        "PostgreSQL {}: {} schema objects, {} tables",
        connection.server_version,
        catalog.pre_data.len(),
        catalog.tables.len()
    ));
    let block_size: u64 = connection
        .query_value("SHOW block_size")
        .map_err(|e| failure("reading the block size", e))?
        .and_then(|size| size.parse().ok())
        .unwrap_or(8192);
    let planned = pieces::plan(&catalog.tables, config.chunk_bytes / block_size.max(1));
    statements_section(PRE_DATA, database, &catalog.pre_data, &planned)?;
    let mut others = if config.jobs > 1 && planned.len() > 1 {
        let snapshot = connection
            .query_value("SELECT pg_catalog.pg_export_snapshot()")
            .map_err(|e| failure("exporting the snapshot", e))?
            .unwrap_or_default();
        copying::join_snapshot(config, &snapshot, version, config.jobs.min(planned.len()) - 1)
    } else {
        Vec::new()
    };
    let copied = copying::run(database, &mut connection, &mut others, &planned);
    for other in others {
        other.close();
    }
    let Copied { rows, bytes, table_rows } = copied?;
    let total_tables = catalog.tables.len() as u64;
    let mut large_objects = start_section(LARGE_OBJECTS, database)?;
    let mut large_object_bytes = 0;
    for oid in &catalog.large_objects {
        large_object_bytes += copy_large_object(&mut connection, *oid, &mut large_objects)?;
    }
    large_objects.into_inner().finish()?;

    statements_section(POST_DATA, database, &catalog.post_data, &[])?;
    connection.execute("COMMIT").map_err(|e| failure("ending the snapshot", e))?;
    let server_version = connection.server_version.clone();
    connection.close();
    Ok(Summary {
        description: format!("database {database}: {total_tables} tables, {rows} rows"),
        attributes: vec![
            ("server_version".into(), server_version),
            ("tables".into(), total_tables.to_string()),
            ("rows".into(), rows.to_string()),
            (tally::ATTRIBUTE.into(), table_rows.digest()),
            ("data_bytes".into(), bytes.to_string()),
            ("large_objects".into(), catalog.large_objects.len().to_string()),
            ("large_object_bytes".into(), large_object_bytes.to_string()),
            ("schema_objects".into(), catalog.pre_data.len().to_string()),
            ("roles".into(), roles.count.to_string()),
        ],
    })
}
