//! Where each statement of a backup belongs, so that a restore can pick schemas and
//! tables as `pg_restore --schema / --table` do: a backup records per statement the
//! schema of its object and, for a relation and what is part of one, the relation
//! (`sql/scope.sql`); a restore with options `restore-schemas`, `restore-tables` or
//! `restore-exclude-tables` runs the statements whose scope it selects
//! ([`crate::pick::Pick`]).
//!
//! In the artifacts the scope is a comment line before the statement's header,
//! `-- stowage:in "schema"` or `-- stowage:in "schema" "schema.relation"`, and pre-data says
//! which tables each data artifact holds,
//! `-- stowage:data data.00001.orders.sql "shop" "shop.orders"`
//! (psql ignores both), so that a restore skips the artifacts of tables it leaves out.

use std::collections::HashMap;

use crate::protocol::{Connection, Error, quote_literal};

/// Keys looked up by one query.
const KEYS_PER_QUERY: usize = 10_000;

/// The schema of a statement's object and the relation it is part of, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub schema: String,
    /// As options name it: `schema.name` (unquoted, so a name with a `.` is ambiguous).
    pub relation: Option<String>,
}

impl Scope {
    /// The scope as a comment line carries it: `"schema"` or `"schema" "relation"`.
    pub fn fields(&self) -> String {
        match &self.relation {
            Some(relation) => format!("{} {}", quote(&self.schema), quote(relation)),
            None => quote(&self.schema),
        }
    }

    /// The scope of `fields` made by [`Scope::fields`].
    pub fn parse(fields: &str) -> Option<Self> {
        let (schema, rest) = unquote(fields)?;
        let relation = match rest.strip_prefix(' ') {
            Some(rest) => {
                let (relation, rest) = unquote(rest)?;
                rest.is_empty().then_some(Some(relation))?
            }
            None if rest.is_empty() => None,
            None => return None,
        };
        Some(Scope { schema, relation })
    }
}

/// `name` in double quotes, with `"` doubled and line ends and `\` escaped, so that
/// any name fits on one line.
fn quote(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' => quoted.push_str("\"\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The name [`quote`] quoted at the start of `text`, and the rest.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let mut name = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' if text[1 + at + 1..].starts_with('"') => {
                name.push('"');
                chars.next();
            }
            '"' => return Some((name, &text[1 + at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => name.push('\n'),
                'r' => name.push('\r'),
                other => name.push(other),
            },
            c => name.push(c),
        }
    }
    None
}

/// The scopes of the objects `keys` name (`catalog oid:object oid`), in the backup's
/// snapshot; objects of no schema are left out.
pub fn read(connection: &mut Connection, keys: &[&str]) -> Result<HashMap<String, Scope>, Error> {
    let mut scopes = HashMap::new();
    for batch in keys.chunks(KEYS_PER_QUERY) {
        let literals: Vec<String> = batch.iter().map(|key| quote_literal(key)).collect();
        let query = include_str!("sql/scope.sql").replace("$KEYS", &format!("ARRAY[{}]::text[]", literals.join(", ")));
        for row in connection.query(&query)? {
            let text = |column: usize| row.get(column).cloned().flatten();
            if let (Some(key), Some(schema)) = (text(0), text(1)) {
                scopes.insert(key, Scope { schema, relation: text(2) });
            }
        }
    }
    Ok(scopes)
}
