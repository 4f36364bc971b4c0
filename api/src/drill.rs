//! The rules that keep a restore drill off the database it verifies: a drill replaces what
//! its target holds, so its target must never be, or reach into, the backed-up database.
//! The operator checks them on the spec (endpoints as written), the runner again before
//! every drill (endpoints as resolved, which catches two names of one server).

use crate::short_hash;

/// Database names are compared within this many bytes: PostgreSQL cuts longer names
/// (NAMEDATALEN - 1), so two names that differ only after it are one database.
const MAX_NAME: usize = 63;
const SCRATCH_SUFFIX: &str = "_stowage_drill";

/// Whether restores of plugin `name` stay inside one database of a server, so that a
/// drill may use another database on the backed-up server (`postgres`). Others restore a
/// whole server (Redis) or keep references to other databases in views, routines and
/// events (MySQL), so their drills need a server of their own; so do plugins unknown here.
pub fn drills_may_share_the_server(plugin: Option<&str>) -> bool {
    plugin == Some("postgres")
}

/// The default scratch database of `source`: `<source>_stowage_drill`, cut to 63 bytes
/// with a hash of the source name, so that it never collapses onto the source's name.
pub fn scratch_name(source: &str) -> String {
    let name = format!("{source}{SCRATCH_SUFFIX}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = short_hash(&[source]);
    let mut keep = MAX_NAME - SCRATCH_SUFFIX.len() - digest.len() - 1;
    while !source.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{digest}{SCRATCH_SUFFIX}", &source[..keep])
}

/// Why a drill into database `target` of a server may hit the backed-up database
/// `source`, for plugin `plugin`; `same_server` says whether both are on one server.
/// `None` when the target is safe.
pub fn drill_conflict(plugin: Option<&str>, source: &str, target: &str, same_server: bool) -> Option<String> {
    let cut = |name: &str| name.as_bytes().iter().take(MAX_NAME).copied().collect::<Vec<u8>>();
    let plugin_name = plugin.unwrap_or("this plugin");
    if drills_may_share_the_server(plugin) {
        // Another name of the same server may hide behind another endpoint: the names decide.
        return (cut(source) == cut(target))
            .then(|| format!("is the backed-up database {source} itself; a drill replaces what its target holds"));
    }
    same_server.then(|| {
        format!(
            "is on the backed-up server, and {plugin_name} restores a whole server or keeps references to other \
             databases: drill into a server of its own (verification.target.endpoint)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_fit_and_never_collapse_onto_the_source() {
        assert_eq!(scratch_name("shop"), "shop_stowage_drill");
        let long = "x".repeat(63);
        let scratch = scratch_name(&long);
        assert!(scratch.len() <= 63 && scratch[..63.min(scratch.len())] != long[..], "{scratch}");
        assert!(drill_conflict(Some("postgres"), &long, &scratch, true).is_none());
    }

    #[test]
    fn a_drill_target_is_never_the_backed_up_database() {
        // PostgreSQL: another database on the same server is the default, the same name never.
        assert!(drill_conflict(Some("postgres"), "shop", "shop_stowage_drill", true).is_none());
        assert!(drill_conflict(Some("postgres"), "shop", "shop", false).is_some(), "an alias of the server");
        let cut = format!("{}a", "s".repeat(63));
        assert!(drill_conflict(Some("postgres"), &"s".repeat(63), &cut, true).is_some(), "cut to one name");
        // Redis restores the whole server; MySQL and unknown plugins need a server of their own.
        for plugin in [Some("redis"), Some("mysql"), None] {
            assert!(drill_conflict(plugin, "0", "0_stowage_drill", true).is_some(), "{plugin:?}");
            assert!(drill_conflict(plugin, "0", "0", false).is_none(), "{plugin:?}");
        }
    }
}
