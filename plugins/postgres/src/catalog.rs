//! What a backup contains, read from the system catalogs inside the backup's snapshot:
//! the statements that create the schema objects (in dependency order), the tables whose
//! rows are copied, and the statements that run after the data.
//!
//! The server renders the SQL itself (`pg_get_viewdef`, `pg_get_constraintdef`,
//! `format('%I')`, ...) with an empty `search_path`, so every name comes out quoted where
//! needed and schema-qualified, exactly as PostgreSQL would parse it back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::database::{self, Properties};
use crate::protocol::{Connection, Error, Row, dollar_quote, quote_literal};
use crate::scope::{self, Scope};

/// Which parts of the database a backup covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these schemas (all user schemas when empty).
    pub schemas: Vec<String>,
    /// Never these schemas.
    pub exclude_schemas: Vec<String>,
    /// Tables (`schema.table`) whose definition is kept but whose rows are not.
    pub exclude_table_data: Vec<String>,
}

impl Selection {
    /// Prefix `query` with the selected schemas (`schemas`) and whether the whole database
    /// is selected (`whole_database`).
    fn scoped(&self, query: &str) -> String {
        let array = |names: &[String]| {
            let items: Vec<String> = names.iter().map(|name| quote_literal(name)).collect();
            format!("ARRAY[{}]::text[]", items.join(", "))
        };
        let scope = include_str!("sql/schemas.sql")
            .replace("$INCLUDE", &array(&self.schemas))
            .replace("$EXCLUDE", &array(&self.exclude_schemas));
        format!("WITH {scope}{query}")
    }

    /// [`Selection::scoped`], with the selected objects that have owners and privileges
    /// as `objects`, and the privileges a restore changes as `changes`.
    fn scoped_with_privileges(&self, query: &str) -> String {
        self.scoped(&format!(
            ", objects AS (\n{}\n), changes AS (\n{}\n)\n{query}",
            include_str!("sql/owned_objects.sql"),
            include_str!("sql/acl_changes.sql")
        ))
    }
}

/// What a restore may leave out on request, as `pg_restore --no-owner` and
/// `--no-privileges` do: the target then need not have the source's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optional {
    Ownership,
    Privileges,
}

/// Kinds of statement (the first words of [`Statement::description`]).
const OWNER: &str = "OWNER";
const ACL: &str = "ACL";
const DEFAULT_ACL: &str = "DEFAULT ACL";

impl Optional {
    pub const ALL: [Optional; 2] = [Optional::Ownership, Optional::Privileges];

    /// Which optional part the statement described as `what` belongs to, if any.
    pub fn of(what: &str) -> Option<Self> {
        let kind = |kind: &str| what.strip_prefix(kind).is_some_and(|rest| rest.starts_with(' '));
        if kind(OWNER) || what == Optional::Ownership.role_check() {
            Some(Optional::Ownership)
        } else if kind(ACL) || kind(DEFAULT_ACL) || what == Optional::Privileges.role_check() {
            Some(Optional::Privileges)
        } else {
            None
        }
    }

    /// The description of the statement that checks this part's roles exist.
    fn role_check(self) -> &'static str {
        RoleUse::Optional(self).check()
    }

    /// The restore option that leaves this part out.
    pub fn option(self) -> &'static str {
        match self {
            Optional::Ownership => "no-owner",
            Optional::Privileges => "no-privileges",
        }
    }
}

/// What a backup's roles are needed for: each use has its own check at the top of pre-data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleUse {
    /// A part a restore may leave out.
    Optional(Optional),
    /// Statements that name roles whatever a restore leaves out: row security policies
    /// and user mappings.
    Named,
}

impl RoleUse {
    const ALL: [RoleUse; 3] =
        [RoleUse::Optional(Optional::Ownership), RoleUse::Optional(Optional::Privileges), RoleUse::Named];

    /// The description of the statement that checks the roles of this use exist.
    fn check(self) -> &'static str {
        match self {
            RoleUse::Optional(Optional::Ownership) => "ROLES owner",
            RoleUse::Optional(Optional::Privileges) => "ROLES privileges",
            RoleUse::Named => "ROLES named",
        }
    }

    /// What roles.sql calls the roles of this use.
    fn roles_kind(self) -> &'static str {
        match self {
            RoleUse::Optional(Optional::Ownership) => "owner",
            RoleUse::Optional(Optional::Privileges) => "privileges",
            RoleUse::Named => "named",
        }
    }
}

/// Whether the statement described as `what` checks that roles exist.
pub fn is_role_check(what: &str) -> bool {
    RoleUse::ALL.iter().any(|role_use| role_use.check() == what)
}

/// A statement that fails at once, naming them, when roles in `roles` are missing, so
/// that a restore stops before loading any data rather than at the end.
fn role_check(role_use: RoleUse, roles: &[String]) -> Statement {
    let literals: Vec<String> = roles.iter().map(|role| quote_literal(role)).collect();
    let literals = literals.join(", ");
    let (needed, or_without) = match role_use {
        RoleUse::Optional(Optional::Ownership) => ("as owners", ", or restore with option no-owner=true"),
        RoleUse::Optional(Optional::Privileges) => ("in privileges", ", or restore with option no-privileges=true"),
        RoleUse::Named => ("in row security policies and user mappings", ""),
    };
    let body = format!(
        "\nDECLARE missing text;\nBEGIN\n  SELECT string_agg(quote_ident(r), ', ') INTO missing\n  \
         FROM unnest(ARRAY[{literals}]::text[]) r WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r);\n  \
         IF missing IS NOT NULL THEN\n    RAISE EXCEPTION 'roles the backup uses {needed} do not exist here: %', missing\n      \
         USING HINT = 'restore with option create-roles=true to create them from the backup''s roles.sql, \
         or create them first{or_without}';\n  END IF;\nEND "
    );
    Statement::unscoped(role_use.check().to_owned(), format!("DO {};", dollar_quote(&body)))
}

/// Large objects created by one statement.
const LARGE_OBJECTS_PER_STATEMENT: usize = 1000;

/// One statement of the script, with what it is for error messages and logs, and where
/// its object belongs (none for objects of no schema and for the script's own settings).
#[derive(Debug, Clone)]
pub struct Statement {
    pub description: String,
    pub sql: String,
    pub scope: Option<Scope>,
}

impl Statement {
    /// A statement about no object of a schema.
    pub fn unscoped(description: String, sql: String) -> Self {
        Statement { description, sql, scope: None }
    }
}

/// A table whose rows are copied.
#[derive(Debug, Clone)]
pub struct Table {
    /// `schema.table`, unquoted, for people.
    pub name: String,
    /// Quoted and qualified, for SQL.
    pub quoted: String,
    /// The quoted columns COPY reads and writes; empty for a table without columns or
    /// with generated columns only.
    pub columns: String,
    pub scope: Option<Scope>,
    /// Pages of the table's main fork when the catalog was read.
    pub pages: u64,
}

impl Table {
    /// The statement that reads the rows.
    pub fn copy_out(&self) -> String {
        format!("COPY {}{} TO STDOUT", self.quoted, self.column_list())
    }

    /// The statement that loads them again.
    pub fn copy_in(&self) -> String {
        format!("COPY {}{} FROM stdin;", self.quoted, self.column_list())
    }

    /// Whether its rows can be read a range of pages at a time: `SELECT` needs a column
    /// (a table without columns is read whole).
    pub fn splits(&self) -> bool {
        !self.columns.is_empty()
    }

    /// The statement that reads the rows in pages `start` up to `end` (to the last page
    /// without one), for a table that [`Table::splits`].
    pub fn copy_out_pages(&self, start: u64, end: Option<u64>) -> String {
        // A TID range scan (PostgreSQL 14+) reads just those pages.
        let mut condition = format!("ctid >= '({start},0)'::pg_catalog.tid");
        if let Some(end) = end {
            condition.push_str(&format!(" AND ctid < '({end},0)'::pg_catalog.tid"));
        }
        format!("COPY (SELECT {} FROM ONLY {} WHERE {condition}) TO STDOUT", self.columns, self.quoted)
    }

    /// `COPY t ()` is a syntax error; without a list, COPY takes every column that is not
    /// generated, which is none here, and still counts the rows.
    fn column_list(&self) -> String {
        if self.columns.is_empty() { String::new() } else { format!(" ({})", self.columns) }
    }
}

/// Everything a backup writes, but the rows and the large objects' contents.
#[derive(Debug)]
pub struct Catalog {
    pub pre_data: Vec<Statement>,
    pub tables: Vec<Table>,
    /// The large objects whose contents are copied (created empty in `pre_data`).
    pub large_objects: Vec<u32>,
    pub post_data: Vec<Statement>,
    /// Objects whose dependencies form a cycle, created in a fixed order instead.
    pub cyclic: Vec<String>,
}

fn text(row: &Row, column: usize) -> String {
    row.get(column).cloned().flatten().unwrap_or_default()
}

/// Lock the selected tables against schema changes and read the catalog. Must run in
/// the backup's transaction, before anything else reads data.
pub fn read(connection: &mut Connection, selection: &Selection) -> Result<Catalog, Error> {
    let table_rows = connection.query(&selection.scoped(include_str!("sql/tables.sql")))?;
    // As pg_dump does: nobody may drop or alter a table while its rows are read.
    for batch in table_rows.chunks(500) {
        let names: Vec<String> = batch.iter().map(|row| text(row, 1)).collect();
        connection.execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", names.join(", ")))?;
    }
    // Sizes only now: pg_relation_size locks each table, in whatever order, where the
    // locks above come in the order of the list.
    let oids: Vec<&str> = table_rows
        .iter()
        .filter_map(|row| row.get(3).and_then(|key| key.as_deref()).and_then(|key| key.split(':').nth(1)))
        .collect();
    let pages: Vec<u64> = connection
        .query(&format!(
            "SELECT pg_catalog.pg_relation_size(o) / pg_catalog.current_setting('block_size')::bigint \
             FROM pg_catalog.unnest('{{{}}}'::pg_catalog.oid[]) WITH ORDINALITY AS t(o, n) ORDER BY n",
            oids.join(",")
        ))?
        .iter()
        .map(|row| text(row, 0).parse().unwrap_or(0))
        .collect();

    let mut objects = Vec::new();
    for query in
        [include_str!("sql/objects.sql"), include_str!("sql/definitions.sql"), include_str!("sql/foreign_data.sql")]
    {
        objects.extend(connection.query(&selection.scoped(query))?);
    }
    // Among objects free to go, kind (the rank) and then name decide.
    let rank = |row: &Row| text(row, 4).parse::<u32>().unwrap_or(u32::MAX);
    objects.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| text(a, 2).cmp(&text(b, 2))));
    // Large objects belong to no schema: they come with a backup of the whole database.
    let large_objects = "SELECT oid FROM pg_largeobject_metadata WHERE (SELECT whole FROM whole_database) ORDER BY oid";
    let large_objects: Vec<u32> = connection
        .query(&selection.scoped(large_objects))?
        .iter()
        .filter_map(|row| text(row, 0).parse().ok())
        .collect();
    let event_triggers = connection.query(&selection.scoped(include_str!("sql/event_triggers.sql")))?;
    let dependencies = connection.query(include_str!("sql/dependencies.sql"))?;
    let aliases = connection.query(include_str!("sql/aliases.sql"))?;
    let post = connection.query(&selection.scoped(include_str!("sql/post_data.sql")))?;
    let privileges = connection.query(&selection.scoped_with_privileges(include_str!("sql/privileges.sql")))?;
    let roles = connection.query(&selection.scoped_with_privileges(include_str!("sql/roles.sql")))?;
    // The database's own properties come with a backup of the whole database, as the
    // objects of no schema do (schemas.sql).
    let database = if selection.schemas.is_empty() { database::read(connection)? } else { Properties::default() };
    // Where every statement's object belongs (the key is the first column of objects,
    // the fourth of tables and the fifth of the others).
    let keys: Vec<String> = objects
        .iter()
        .map(|row| text(row, 0))
        .chain(table_rows.iter().map(|row| text(row, 3)))
        .chain(post.iter().chain(&privileges).chain(&event_triggers).map(|row| text(row, 4)))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let scopes = scope::read(connection, &keys)?;
    let scope_of = |key: String| scopes.get(&key).cloned();

    let tables: Vec<Table> = table_rows
        .iter()
        .zip(pages)
        .map(|(row, pages)| Table {
            name: text(row, 0),
            quoted: text(row, 1),
            columns: text(row, 2),
            scope: scope_of(text(row, 3)),
            pages,
        })
        .filter(|table| !selection.exclude_table_data.contains(&table.name))
        .collect();

    let nodes: Vec<Node> = objects
        .iter()
        .map(|row| Node {
            key: text(row, 0),
            statement: Statement {
                description: format!("{} {}", text(row, 1), text(row, 2)),
                sql: text(row, 3),
                scope: scope_of(text(row, 0)),
            },
            refresh: row.get(5).cloned().flatten(),
        })
        .collect();
    let edges: Vec<(String, String)> = dependencies.iter().map(|row| (text(row, 0), text(row, 1))).collect();
    let aliases: Vec<(String, String)> = aliases.iter().map(|row| (text(row, 0), text(row, 1))).collect();
    let (order, cyclic) = dependency_order(&nodes, &edges, &aliases);

    let mut pre_data = Vec::new();
    for role_use in RoleUse::ALL {
        let mut needed: Vec<String> =
            roles.iter().filter(|row| text(row, 0) == role_use.roles_kind()).map(|row| text(row, 1)).collect();
        if role_use == RoleUse::Optional(Optional::Privileges) {
            needed.extend(
                database.privilege_roles.iter().filter(|role| !needed.contains(role)).cloned().collect::<Vec<_>>(),
            );
        }
        if !needed.is_empty() {
            pre_data.push(role_check(role_use, &needed));
        }
    }
    let mut refreshes = Vec::new();
    for index in order {
        let node = &nodes[index];
        if !node.statement.sql.is_empty() {
            pre_data.push(node.statement.clone());
        }
        if let Some(refresh) = &node.refresh {
            refreshes.push(Statement {
                description: format!("REFRESH {}", node.statement.description),
                sql: refresh.clone(),
                scope: node.statement.scope.clone(),
            });
        }
    }
    pre_data.extend(large_objects.chunks(LARGE_OBJECTS_PER_STATEMENT).map(|batch| {
        let oids: Vec<String> = batch.iter().map(u32::to_string).collect();
        Statement::unscoped(
            format!("LARGE OBJECTS {}..{}", oids[0], oids[oids.len() - 1]),
            format!("SELECT pg_catalog.lo_create(oid) FROM unnest('{{{}}}'::oid[]) oid;", oids.join(",")),
        )
    }));
    let statement = |row: &Row| Statement {
        description: format!("{} {}", text(row, 1), text(row, 2)),
        sql: text(row, 3),
        scope: scope_of(text(row, 4)),
    };
    // Materialized views are filled after the indexes and triggers, before comments;
    // owners and privileges come next, then the database's properties, event triggers last.
    let (before_comments, comments): (Vec<&Row>, Vec<&Row>) = post.iter().partition(|row| text(row, 0) != "9");
    let post_data = before_comments
        .into_iter()
        .map(statement)
        .chain(refreshes)
        .chain(comments.into_iter().map(statement))
        .chain(privileges.iter().map(statement))
        .chain(database.statements)
        .chain(event_triggers.iter().map(statement));
    let cyclic = cyclic.into_iter().map(|index| nodes[index].statement.description.clone()).collect();
    Ok(Catalog { pre_data, tables, large_objects, post_data: post_data.collect(), cyclic })
}

/// A schema object created before the data.
struct Node {
    /// `catalog oid:object oid`, the identity pg_depend uses.
    key: String,
    statement: Statement,
    refresh: Option<String>,
}

/// Order `nodes` so every object comes after what it depends on; among objects free to
/// go, the catalog's order (kind, then name) decides. Returns the order and the objects
/// caught in dependency cycles (appended in catalog order).
fn dependency_order(
    nodes: &[Node],
    dependencies: &[(String, String)],
    aliases: &[(String, String)],
) -> (Vec<usize>, Vec<usize>) {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, node)| (node.key.as_str(), i)).collect();
    let mut alias: HashMap<&str, &str> = HashMap::new();
    for (part, whole) in aliases {
        alias.entry(part.as_str()).or_insert(whole.as_str());
    }
    // Follow part-of links (an array type -> its element -> its extension) to a node.
    let resolve = |key: &str| {
        let mut key = key;
        for _ in 0..8 {
            if let Some(&node) = index.get(key) {
                return Some(node);
            }
            key = alias.get(key)?;
        }
        None
    };
    let mut edges = HashSet::new();
    for (dependent, dependency) in dependencies {
        if let (Some(after), Some(before)) = (resolve(dependent), resolve(dependency))
            && after != before
        {
            edges.insert((before, after));
        }
    }
    let mut waiting_for = vec![0usize; nodes.len()];
    let mut followers = vec![Vec::new(); nodes.len()];
    for &(before, after) in &edges {
        waiting_for[after] += 1;
        followers[before].push(after);
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..nodes.len()).filter(|&i| waiting_for[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(node)) = ready.pop() {
        order.push(node);
        for &follower in &followers[node] {
            waiting_for[follower] -= 1;
            if waiting_for[follower] == 0 {
                ready.push(Reverse(follower));
            }
        }
    }
    let cyclic: Vec<usize> = (0..nodes.len()).filter(|&i| waiting_for[i] > 0).collect();
    order.extend(&cyclic);
    (order, cyclic)
}

/// Statements that make a database empty again (see clear.sql).
pub fn clear_statements(connection: &mut Connection) -> Result<Vec<String>, Error> {
    Ok(connection.query(include_str!("sql/clear.sql"))?.iter().map(|row| text(row, 0)).collect())
}

/// How many user objects a database holds (a new database holds none).
pub fn user_objects(connection: &mut Connection) -> Result<u64, Error> {
    Ok(connection.query_value(include_str!("sql/user_objects.sql"))?.and_then(|n| n.parse().ok()).unwrap_or(0))
}
