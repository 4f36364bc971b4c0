//! Rows per table, as backup and restore both count them, summarised as one digest
//! (`table_rows_sha256`): a restore drill compares it with the backup's, so rows that went
//! missing from one table are found even when the totals agree.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The summary attribute of the digest.
pub const ATTRIBUTE: &str = "table_rows_sha256";

/// Rows per table, keyed by the table's entry in the data script (`TABLE DATA name`),
/// which backup and restore name alike.
#[derive(Debug, Default)]
pub struct TableRows(BTreeMap<String, u64>);

impl TableRows {
    pub fn add(&mut self, table: &str, rows: u64) {
        *self.0.entry(table.to_owned()).or_default() += rows;
    }

    /// How many tables have a count.
    pub fn tables(&self) -> u64 {
        self.0.len() as u64
    }

    /// SHA-256 of `table\trows\n` per table in name order, lowercase hex.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (table, rows) in &self.0 {
            hasher.update(format!("{table}\t{rows}\n").as_bytes());
        }
        hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
