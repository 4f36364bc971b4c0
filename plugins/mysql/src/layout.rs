//! Where each database's artifacts are. A backup of one database names them as it always
//! has (`schema.sql`, `data.NNNNN.<table>.sql`, `post.sql`, `users.sql`), so the emergency
//! procedure for it stays `cat | mariadb`. A backup of several lists them in [`INDEX`], in
//! order, and the artifacts of the Nth carry the prefix `db.NNNNN.<name>.`: every name
//! stays a plain file name whatever the database is called, and the index, which the
//! `mariadb` client also replays, says which database each number is.

use std::io::BufReader;

use stowage_plugin_sdk::{PluginError, artifacts};

use crate::script::{Statements, ident, unquote_ident};
use crate::users;

/// The index of a backup of several databases.
pub const INDEX: &str = "databases.sql";

const SCHEMA: &str = "schema.sql";
const POST: &str = "post.sql";
/// The series of data artifacts, one per table (or group of tables).
const DATA: &str = "data";

/// The statement of the index that names one database.
const CREATE: &str = "CREATE DATABASE IF NOT EXISTS ";

/// One database of a backup and the names of its artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The database's name on the source, if the backup says it (a backup of one
    /// database keeps it in its summary only).
    pub name: Option<String>,
    /// What every artifact name of the database starts with.
    prefix: String,
}

impl Stored {
    pub fn schema(&self) -> String {
        format!("{}{SCHEMA}", self.prefix)
    }

    pub fn post(&self) -> String {
        format!("{}{POST}", self.prefix)
    }

    pub fn users(&self) -> String {
        format!("{}{}", self.prefix, users::ARTIFACT)
    }

    /// The `number`th data artifact, named after the first table it holds.
    pub fn data(&self, number: usize, table: &str) -> String {
        artifacts::numbered_name(&format!("{}{DATA}", self.prefix), number, table, "sql")
    }

    /// What data artifact `name` of the database is named after (its first table, as
    /// much of the name as fits): the same for the artifacts of one table read in ranges.
    pub fn data_table<'a>(&self, name: &'a str) -> &'a str {
        let rest = name.strip_prefix(&format!("{}{DATA}.", self.prefix)).unwrap_or(name);
        rest.split_once('.').map_or(rest, |(_, table)| table)
    }

    /// The database's data artifacts among `names`, in their numbered order.
    pub fn data_series(&self, names: &[String]) -> Vec<String> {
        artifacts::series(names, &format!("{}{DATA}", self.prefix))
    }
}

/// The artifact names of a backup of `databases`, in their order.
pub fn for_backup(databases: Vec<String>) -> Vec<Stored> {
    let several = databases.len() > 1;
    databases
        .into_iter()
        .enumerate()
        .map(|(index, name)| {
            // `db.00001.shop.`: the numbered name of an artifact with an empty extension.
            let prefix = if several { artifacts::numbered_name("db", index + 1, &name, "") } else { String::new() };
            Stored { name: Some(name), prefix }
        })
        .collect()
}

/// The content of [`INDEX`] for `databases` (written only when there are several).
pub fn index(databases: &[Stored]) -> String {
    let mut text = String::from(
        "-- The databases of this Stowage backup, in the order of their artifacts: those of the first start\n\
         -- with db.00001., and so on. Replayed by the mariadb client, it creates the databases (docs/mysql.md).\n",
    );
    for name in databases.iter().filter_map(|database| database.name.as_deref()) {
        text.push_str(&format!("{CREATE}{};\n", ident(name)));
    }
    text
}

/// The databases of the backup being restored, whose artifacts are `names`.
pub fn read(names: &[String]) -> Result<Vec<Stored>, PluginError> {
    if !names.iter().any(|name| name == INDEX) {
        return Ok(vec![Stored { name: None, prefix: String::new() }]);
    }
    let unreadable = |detail: String| PluginError::Artifact(format!("{INDEX}: {detail}"));
    let mut statements = Statements::new(BufReader::new(artifacts::open(INDEX)?));
    let mut databases = Vec::new();
    while let Some(statement) = statements.next_statement().map_err(|e| unreadable(e.to_string()))? {
        let name = std::str::from_utf8(&statement)
            .ok()
            .and_then(|statement| statement.strip_prefix(CREATE))
            .and_then(unquote_ident)
            .ok_or_else(|| unreadable(format!("{:?} names no database", String::from_utf8_lossy(&statement))))?;
        databases.push(name);
    }
    if databases.is_empty() {
        return Err(unreadable("it names no database".into()));
    }
    Ok(for_backup(databases))
}
