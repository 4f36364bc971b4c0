//! Which parts of a backup a restore runs: with options `restore-schemas`,
//! `restore-tables` and `restore-exclude-tables`, as `pg_restore --schema / --table /
//! --exclude-table` pick them, by the scope the backup recorded per statement
//! ([`crate::scope`]).
//!
//! A table brings what is part of it (column defaults, constraints, indexes, triggers,
//! policies, rules, row security, extended statistics, comments, owner, privileges, an
//! owned or identity sequence) and its rows; a schema brings everything in it. What they
//! use from elsewhere (their schema, types, functions, the tables their foreign keys
//! reference) must be in the target, as with `pg_restore`. Objects of no schema (casts,
//! foreign servers, publications, event triggers, large objects, the database's own
//! properties) come only with a restore that picks no schemas or tables.

use std::collections::HashSet;
use std::io::BufReader;

use stowage_plugin_sdk::{PluginError, artifacts};

use crate::scope::Scope;
use crate::script::{self, Entry, ScriptReader};
use crate::{READ_BUFFER, artifact_error, catalog};

/// The options that pick parts of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pick {
    /// Everything in these schemas.
    pub schemas: Vec<String>,
    /// These relations (`schema.name`) and what is part of them.
    pub tables: Vec<String>,
    /// Never these relations, nor what is part of them.
    pub exclude_tables: Vec<String>,
}

impl Pick {
    /// Whether the restore leaves out some parts of the backup.
    pub fn is_partial(&self) -> bool {
        !self.schemas.is_empty() || !self.tables.is_empty() || !self.exclude_tables.is_empty()
    }

    /// What the options picked, for the summary.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, names) in [("schemas", &self.schemas), ("tables", &self.tables), ("without", &self.exclude_tables)] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        }
        parts.join("; ")
    }

    /// Whether only what `schemas` and `tables` name is restored.
    fn names_parts(&self) -> bool {
        !self.schemas.is_empty() || !self.tables.is_empty()
    }

    /// Whether a statement about an object of `scope` runs.
    pub fn includes(&self, scope: Option<&Scope>) -> bool {
        let Some(scope) = scope else {
            return !self.names_parts();
        };
        let relation = scope.relation.as_ref();
        if relation.is_some_and(|relation| self.exclude_tables.contains(relation)) {
            return false;
        }
        !self.names_parts()
            || self.schemas.contains(&scope.schema)
            || relation.is_some_and(|relation| self.tables.contains(relation))
    }
}

/// A partial restore: what the backup holds, read from its pre-data before anything is
/// restored.
#[derive(Debug)]
pub struct Picking<'a> {
    pick: &'a Pick,
    /// Each data artifact with a table it holds.
    data_index: Vec<(String, Scope)>,
}

impl<'a> Picking<'a> {
    /// Read the backup's pre-data for where its objects belong; refuse a backup that did
    /// not record it, and names the backup does not hold.
    pub fn survey(pick: &'a Pick) -> Result<Self, PluginError> {
        let reader = BufReader::with_capacity(READ_BUFFER, artifacts::open(script::PRE_DATA)?);
        let mut script = ScriptReader::new(reader);
        let (mut schemas, mut relations) = (HashSet::new(), HashSet::new());
        while let Some(entry) = script.next_entry().map_err(artifact_error)? {
            let (Entry::Sql { scope: Some(scope), .. } | Entry::Copy { scope: Some(scope), .. }) = entry else {
                continue;
            };
            relations.extend(scope.relation);
            schemas.insert(scope.schema);
        }
        if schemas.is_empty() {
            return Err(PluginError::Unsupported(
                "options restore-schemas, restore-tables, restore-exclude-tables: this backup was taken by a plugin \
                 version that did not record where each object belongs; restore it whole"
                    .into(),
            ));
        }
        let missing = |option: &str, names: &[String], held: &HashSet<String>, what: &str| {
            let missing: Vec<&str> = names.iter().filter(|name| !held.contains(*name)).map(String::as_str).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(PluginError::InvalidSettings(format!(
                    "option {option}: the backup has no {what} {}",
                    missing.join(", ")
                )))
            }
        };
        let own = "table, view or sequence of its own";
        missing("restore-schemas", &pick.schemas, &schemas, "schema")?;
        missing("restore-tables", &pick.tables, &relations, own)?;
        missing("restore-exclude-tables", &pick.exclude_tables, &relations, own)?;
        Ok(Picking { pick, data_index: script.data_index().to_vec() })
    }

    /// Whether section `name` can be left unread: large objects when objects of no
    /// schema are left out, a data artifact when none of its tables is picked.
    pub fn skips_section(&self, name: &str) -> bool {
        if name == script::LARGE_OBJECTS {
            return !self.pick.includes(None);
        }
        let mut tables = self.data_index.iter().filter(|(artifact, _)| artifact == name).peekable();
        tables.peek().is_some() && !tables.any(|(_, scope)| self.pick.includes(Some(scope)))
    }

    /// Whether the statement described as `what`, about an object of `scope`, runs.
    pub fn runs(&self, what: &str, scope: Option<&Scope>) -> bool {
        // The role checks cover the whole backup; each picked statement names a missing
        // role itself.
        what == script::SETTING || (!catalog::is_role_check(what) && self.pick.includes(scope))
    }
}
