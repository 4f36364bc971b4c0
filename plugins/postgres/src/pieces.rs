//! Which rows each data artifact holds: a table each; a big table in several, a range of
//! its pages each (so that no artifact grows past a bounded size and one table is read,
//! and restored, on several connections at once); past the host's limit on artifacts,
//! consecutive tables share one.

use stowage_plugin_sdk::artifacts;

use crate::catalog::Table;
use crate::script::DATA;

/// Data artifacts at most: the host takes 10,000 artifacts per backup.
const MAX_DATA_ARTIFACTS: usize = 4096;

/// Rows of one table in a data artifact: all of them, or those in one range of pages.
#[derive(Debug, Clone, Copy)]
pub struct Part<'c> {
    pub table: &'c Table,
    /// Pages `start` up to `end` (to the last page without one).
    pub pages: Option<(u64, Option<u64>)>,
}

impl Part<'_> {
    /// The statement that reads the rows.
    pub fn copy_out(&self) -> String {
        match self.pages {
            Some((start, end)) => self.table.copy_out_pages(start, end),
            None => self.table.copy_out(),
        }
    }
}

/// One data artifact and the rows it holds, in order.
#[derive(Debug)]
pub struct DataArtifact<'c> {
    pub name: String,
    pub parts: Vec<Part<'c>>,
}

/// The data artifacts of `tables`, a table split into ranges of `piece_pages` pages (or
/// more, to stay within [`MAX_DATA_ARTIFACTS`]).
pub fn plan(tables: &[Table], piece_pages: u64) -> Vec<DataArtifact<'_>> {
    let name = |number: usize, table: &Table| artifacts::numbered_name(DATA, number, &table.name, "sql");
    if tables.len() > MAX_DATA_ARTIFACTS {
        let per_artifact = tables.len().div_ceil(MAX_DATA_ARTIFACTS);
        return tables
            .chunks(per_artifact)
            .enumerate()
            .map(|(number, group)| DataArtifact {
                name: name(number + 1, &group[0]),
                parts: group.iter().map(|table| Part { table, pages: None }).collect(),
            })
            .collect();
    }
    let mut piece_pages = piece_pages.max(1);
    let pieces = |table: &Table, piece_pages: u64| {
        if table.splits() { table.pages.div_ceil(piece_pages).max(1) } else { 1 }
    };
    while tables.iter().map(|table| pieces(table, piece_pages)).sum::<u64>() > MAX_DATA_ARTIFACTS as u64 {
        piece_pages = piece_pages.saturating_mul(2);
    }
    let mut planned = Vec::new();
    for table in tables {
        let count = pieces(table, piece_pages);
        for piece in 0..count {
            let pages =
                (count > 1).then(|| (piece * piece_pages, (piece + 1 < count).then_some((piece + 1) * piece_pages)));
            planned.push(DataArtifact { name: name(planned.len() + 1, table), parts: vec![Part { table, pages }] });
        }
    }
    planned
}
