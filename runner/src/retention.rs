//! Which backups a retention policy removes.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::manifest::Manifest;

/// A backup is kept when any rule keeps it. With no rule, everything is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest N backups.
    pub keep_last: Option<usize>,
    /// Keep backups younger than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    pub fn is_unlimited(&self) -> bool {
        self.keep_last.is_none() && self.max_age.is_none()
    }

    /// The backups to delete among `backups` (of one configuration), never `keep`.
    pub fn expired<'a>(&self, backups: &'a [Manifest], keep: &str, now: DateTime<Utc>) -> Vec<&'a Manifest> {
        if self.is_unlimited() {
            return Vec::new();
        }
        let mut newest_first: Vec<&Manifest> = backups.iter().collect();
        newest_first.sort_by(|a, b| (b.started_at, &b.backup_id).cmp(&(a.started_at, &a.backup_id)));
        let kept_by_count: HashSet<&str> =
            newest_first.iter().take(self.keep_last.unwrap_or(0)).map(|m| m.backup_id.as_str()).collect();
        let young = |m: &Manifest| {
            self.max_age.is_some_and(|max_age| {
                now.signed_duration_since(m.started_at).to_std().map_or(true, |age| age < max_age)
            })
        };
        newest_first
            .into_iter()
            .filter(|m| m.backup_id != keep && !kept_by_count.contains(m.backup_id.as_str()) && !young(m))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, hours_ago: i64, now: DateTime<Utc>) -> Manifest {
        crate::manifest::sample(id, now - chrono::Duration::hours(hours_ago))
    }

    fn ids(expired: Vec<&Manifest>) -> Vec<&str> {
        let mut ids: Vec<&str> = expired.into_iter().map(|m| m.backup_id.as_str()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let now = Utc::now();
        let backups: Vec<Manifest> = (0..5).map(|i| backup(&format!("b{i}"), 10 - i, now)).collect();
        let retention = Retention { keep_last: Some(2), max_age: None };
        assert_eq!(ids(retention.expired(&backups, "b4", now)), ["b0", "b1", "b2"]);
    }

    #[test]
    fn max_age_removes_old_backups_and_rules_combine() {
        let now = Utc::now();
        let backups = vec![backup("old", 48, now), backup("older", 72, now), backup("new", 1, now)];
        let by_age = Retention { keep_last: None, max_age: Some(Duration::from_secs(24 * 3600)) };
        assert_eq!(ids(by_age.expired(&backups, "new", now)), ["old", "older"]);
        let both = Retention { keep_last: Some(2), ..by_age };
        assert_eq!(ids(both.expired(&backups, "new", now)), ["older"]);
    }

    #[test]
    fn the_backup_just_written_and_unlimited_policies_are_safe() {
        let now = Utc::now();
        let backups = vec![backup("a", 100, now)];
        let strict = Retention { keep_last: Some(0), max_age: Some(Duration::from_secs(1)) };
        assert!(strict.expired(&backups, "a", now).is_empty());
        assert!(Retention::default().expired(&backups, "other", now).is_empty());
    }
}
