//! Restore: the plain secondary keys of big tables built after their rows. Rows loaded
//! into a table with a secondary key go into that key's B-tree one at a time, at random
//! places; a key added to a loaded table is built from one sorted pass over it (the idea
//! of myloader's `--innodb-optimize-keys`). Option `keys-after-data` says from what size
//! of stored data a table's keys wait.
//!
//! Only what comes back exactly as it was is touched, so `SHOW CREATE TABLE` of the
//! restored table equals the source's:
//! - plain `KEY`s only: `UNIQUE` keys stay, and the server sorts every `UNIQUE` key before
//!   the plain ones anyway, and `FULLTEXT` keys after them, so plain keys added again in
//!   their order take their old places;
//! - InnoDB tables without `SPATIAL` keys (which the server sorts among the plain ones);
//! - tables that no foreign key uses or references (a key may serve one, and the server
//!   would make its own in its place);
//! - tables whose `AUTO_INCREMENT` column, if any, leads no plain key (that column must
//!   always lead some key).

use stowage_plugin_sdk::sessions::first_answering;
use stowage_plugin_sdk::{PluginError, report};

use crate::failure;
use crate::protocol::{Connection, text};
use crate::script::ident;

/// The plain secondary keys of one table, dropped before its rows were loaded.
#[derive(Debug)]
pub struct Deferred {
    table: String,
    /// Each key's definition as `SHOW CREATE TABLE` prints it (`KEY `k` (`c`)`).
    keys: Vec<String>,
    /// The table's stored data, to build the biggest first.
    bytes: u64,
}

/// Drop the plain secondary keys of the tables of the current database that hold more
/// than `threshold` bytes of stored data (`stored_bytes`, by table name) and qualify
/// (see the module's text); what was dropped, to [`build`] after the data.
pub fn defer(
    connection: &mut Connection,
    threshold: u64,
    stored_bytes: impl Fn(&str) -> u64,
) -> Result<Vec<Deferred>, PluginError> {
    let doing = "listing the tables whose keys wait for their data";
    let candidates = connection
        .rows(
            "SELECT t.TABLE_NAME FROM information_schema.TABLES t \
             WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'BASE TABLE' AND t.ENGINE = 'InnoDB' \
             AND NOT EXISTS (SELECT 1 FROM information_schema.REFERENTIAL_CONSTRAINTS r \
             WHERE (r.CONSTRAINT_SCHEMA = t.TABLE_SCHEMA AND r.TABLE_NAME = t.TABLE_NAME) \
             OR (r.UNIQUE_CONSTRAINT_SCHEMA = t.TABLE_SCHEMA AND r.REFERENCED_TABLE_NAME = t.TABLE_NAME))",
        )
        .map_err(|e| failure(doing, e))?;
    let mut deferred = Vec::new();
    for row in candidates {
        let [table] = text(row);
        let bytes = stored_bytes(&table);
        if bytes <= threshold {
            continue;
        }
        let shown = connection
            .rows(&format!("SHOW CREATE TABLE {}", ident(&table)))
            .map_err(|e| failure(&format!("reading the definition of table {table}"), e))?;
        let Some([_, definition]) = shown.into_iter().next().map(text) else { continue };
        let keys = plain_keys(&definition);
        if keys.is_empty() {
            continue;
        }
        let drops: Vec<String> = keys.iter().map(|(name, _)| format!("DROP KEY {}", ident(name))).collect();
        connection
            .execute(&format!("ALTER TABLE {} {}", ident(&table), drops.join(", ")))
            .map_err(|e| failure(&format!("dropping the keys of table {table} until its data is in"), e))?;
        let keys = keys.into_iter().map(|(_, definition)| definition).collect();
        deferred.push(Deferred { table, keys, bytes });
    }
    Ok(deferred)
}

/// Add the keys [`defer`] dropped, a table per connection at a time on `connections`
/// (in the database), the biggest tables first.
pub fn build(connections: &mut [&mut Connection], mut deferred: Vec<Deferred>) -> Result<(), PluginError> {
    if deferred.is_empty() {
        return Ok(());
    }
    let keys: usize = deferred.iter().map(|table| table.keys.len()).sum();
    report::info(&format!(
        "building {keys} keys of {} tables after their data, on {} sessions",
        deferred.len(),
        connections.len().min(deferred.len())
    ));
    deferred.sort_by_key(|table| std::cmp::Reverse(table.bytes));
    // The sessions come from loading data, which may have left them in binary
    // (`script::Strings`); the definitions are utf8mb4.
    for connection in connections.iter_mut() {
        connection.execute("SET NAMES utf8mb4").map_err(|e| failure("setting up the session for the key builds", e))?;
    }
    let mut pending = deferred.into_iter();
    let mut running: Vec<Option<String>> = connections.iter().map(|_| None).collect();
    loop {
        for (connection, slot) in connections.iter_mut().zip(running.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let Some(Deferred { table, keys, .. }) = pending.next() else { break };
            let adds: Vec<String> = keys.iter().map(|key| format!("ADD {key}")).collect();
            let statement = format!("ALTER TABLE {} {}", ident(&table), adds.join(", "));
            connection.send(statement.as_bytes()).map_err(|e| building(&table, e))?;
            *slot = Some(table);
        }
        let Some(index) = first_answering(connections, &running)
            .map_err(|e| PluginError::Connection(format!("waiting for the key builds: {e}")))?
        else {
            return Ok(());
        };
        let table = running[index].take().unwrap_or_default();
        // DDL commits as it ends.
        connections[index].finish().map_err(|e| building(&table, e))?;
    }
}

fn building(table: &str, error: crate::protocol::Error) -> PluginError {
    failure(
        &format!(
            "building the keys of table {table} after its data (they need room in the server's tmpdir; option \
             keys-after-data=off loads tables with their keys)"
        ),
        error,
    )
}

/// The plain keys of a table that may wait for its data, as (name, definition), from
/// its `SHOW CREATE TABLE`; none if the table does not qualify (see the module's text).
fn plain_keys(definition: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    // Columns come before keys in the definition.
    let mut auto_increment = None;
    for line in definition.lines() {
        if line.starts_with("  SPATIAL KEY ") {
            return Vec::new();
        }
        if let Some(key) = line.strip_prefix("  KEY ") {
            let Some((name, columns)) = leading_ident(key) else { return Vec::new() };
            let leads = |column: &String| columns.trim_start().starts_with(&format!("({}", ident(column)));
            if auto_increment.as_ref().is_some_and(leads) {
                return Vec::new();
            }
            keys.push((name, line.trim().trim_end_matches(',').to_owned()));
        } else if let Some((column, rest)) = line.strip_prefix("  ").and_then(leading_ident)
            && unquoted(rest).contains(" AUTO_INCREMENT")
        {
            auto_increment = Some(column);
        }
    }
    keys
}

/// `text` without its string literals (`'...'`, with `''` and `\'` inside): a column's
/// comment or default may say anything.
fn unquoted(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\'' {
            out.push(c);
            continue;
        }
        // Inside a literal until its closing quote; a doubled quote reads as two literals.
        while let Some(inner) = chars.next() {
            match inner {
                '\\' => drop(chars.next()),
                '\'' => break,
                _ => {}
            }
        }
    }
    out
}

/// The quoted identifier `text` starts with, unquoted, and the rest.
fn leading_ident(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '`' {
            if chars.peek().is_some_and(|(_, next)| *next == '`') {
                chars.next();
                name.push('`');
                continue;
            }
            return Some((name, &inner[at + 1..]));
        }
        name.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: &str = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `k` int(11) NOT NULL DEFAULT 0,\n  \
                         `c` char(120) NOT NULL DEFAULT '',\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`c`),\n  \
                         KEY `k_1` (`k`),\n  KEY `odd ``name``` (`c`(10) DESC,`k`) COMMENT 'x'\n) ENGINE=InnoDB";

    #[test]
    fn plain_keys_are_read_with_their_whole_definition() {
        let keys = plain_keys(SHOWN);
        assert_eq!(
            keys,
            vec![
                ("k_1".to_owned(), "KEY `k_1` (`k`)".to_owned()),
                ("odd `name`".to_owned(), "KEY `odd ``name``` (`c`(10) DESC,`k`) COMMENT 'x'".to_owned()),
            ]
        );
    }

    #[test]
    fn a_table_whose_auto_increment_column_leads_a_plain_key_keeps_its_keys() {
        let shown = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `n` int(11) NOT NULL AUTO_INCREMENT,\n  \
                     PRIMARY KEY (`id`),\n  KEY `n` (`n`)\n) ENGINE=InnoDB";
        assert!(plain_keys(shown).is_empty());
        assert_eq!(plain_keys(SHOWN).len(), 2, "an AUTO_INCREMENT primary key is no reason");
    }

    #[test]
    fn auto_increment_in_a_comment_or_default_is_no_auto_increment_column() {
        let shown = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  \
                     `note` varchar(9) DEFAULT 'it''s \\' AUTO_INCREMENT' COMMENT ' AUTO_INCREMENT',\n  \
                     PRIMARY KEY (`id`),\n  KEY `n` (`note`)\n) ENGINE=InnoDB";
        assert_eq!(plain_keys(shown).len(), 1);
        assert_eq!(unquoted("a 'b '' c' d 'e\\'f' g"), "a  d  g");
    }

    #[test]
    fn a_table_with_a_spatial_key_keeps_its_keys() {
        let shown = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `g` geometry NOT NULL,\n  \
                     PRIMARY KEY (`id`),\n  KEY `a` (`id`),\n  SPATIAL KEY `g` (`g`)\n) ENGINE=InnoDB";
        assert!(plain_keys(shown).is_empty());
    }

    #[test]
    fn quoted_identifiers_end_at_their_closing_quote() {
        assert_eq!(leading_ident("`a``b` (x)"), Some(("a`b".to_owned(), " (x)")));
        assert_eq!(leading_ident("`open"), None);
        assert_eq!(leading_ident("plain"), None);
    }
}
