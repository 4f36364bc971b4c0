//! Which backups a retention policy removes.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::manifest::Manifest;

/// A backup is kept when any rule keeps it. With no rule, everything is kept. The rules
/// are restic's and K8up's: `keep_last` keeps the newest N; `keep_hourly` keeps the newest
/// backup of each of the newest N hours that have one, and so on for days, ISO weeks,
/// months and years (UTC); `max_age` keeps everything younger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<usize>,
    pub keep_hourly: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub keep_monthly: Option<usize>,
    pub keep_yearly: Option<usize>,
    pub max_age: Option<Duration>,
}

/// The period a time falls in, as a sortable key.
type PeriodOf = fn(DateTime<Utc>) -> (i32, u32, u32, u32);

impl Retention {
    pub fn is_unlimited(&self) -> bool {
        self.keep_last.is_none() && self.periodic().all(|(keep, _)| keep.is_none()) && self.max_age.is_none()
    }

    fn periodic(&self) -> impl Iterator<Item = (Option<usize>, PeriodOf)> {
        let hour: PeriodOf = |t| (t.year(), t.ordinal(), t.hour(), 0);
        let day: PeriodOf = |t| (t.year(), t.ordinal(), 0, 0);
        let week: PeriodOf = |t| (t.iso_week().year(), t.iso_week().week(), 0, 0);
        let month: PeriodOf = |t| (t.year(), t.month(), 0, 0);
        let year: PeriodOf = |t| (t.year(), 0, 0, 0);
        [
            (self.keep_hourly, hour),
            (self.keep_daily, day),
            (self.keep_weekly, week),
            (self.keep_monthly, month),
            (self.keep_yearly, year),
        ]
        .into_iter()
    }

    /// The backups to delete among `backups` (of one configuration), never `keep`.
    pub fn expired<'a>(&self, backups: &'a [Manifest], keep: &str, now: DateTime<Utc>) -> Vec<&'a Manifest> {
        if self.is_unlimited() {
            return Vec::new();
        }
        let mut newest_first: Vec<&Manifest> = backups.iter().collect();
        newest_first.sort_by(|a, b| (b.started_at, &b.backup_id).cmp(&(a.started_at, &a.backup_id)));
        let mut kept: HashSet<&str> =
            newest_first.iter().take(self.keep_last.unwrap_or(0)).map(|m| m.backup_id.as_str()).collect();
        for (limit, period_of) in self.periodic() {
            let Some(limit) = limit else { continue };
            let mut periods = Vec::new();
            for manifest in &newest_first {
                let period = period_of(manifest.started_at);
                if periods.last() != Some(&period) {
                    if periods.len() == limit {
                        break;
                    }
                    // The newest backup of a period comes first: it stands for the period.
                    periods.push(period);
                    kept.insert(manifest.backup_id.as_str());
                }
            }
        }
        let young = |m: &Manifest| {
            self.max_age.is_some_and(|max_age| {
                now.signed_duration_since(m.started_at).to_std().map_or(true, |age| age < max_age)
            })
        };
        newest_first
            .into_iter()
            .filter(|m| m.backup_id != keep && !kept.contains(m.backup_id.as_str()) && !young(m))
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
        let retention = Retention { keep_last: Some(2), ..Retention::default() };
        assert_eq!(ids(retention.expired(&backups, "b4", now)), ["b0", "b1", "b2"]);
    }

    #[test]
    fn max_age_removes_old_backups_and_rules_combine() {
        let now = Utc::now();
        let backups = vec![backup("old", 48, now), backup("older", 72, now), backup("new", 1, now)];
        let by_age = Retention { max_age: Some(Duration::from_secs(24 * 3600)), ..Retention::default() };
        assert_eq!(ids(by_age.expired(&backups, "new", now)), ["old", "older"]);
        let both = Retention { keep_last: Some(2), ..by_age };
        assert_eq!(ids(both.expired(&backups, "new", now)), ["older"]);
    }

    #[test]
    fn the_backup_just_written_and_unlimited_policies_are_safe() {
        let now = Utc::now();
        let backups = vec![backup("a", 100, now)];
        let strict = Retention {
            keep_last: Some(0),
            keep_daily: Some(0),
            max_age: Some(Duration::from_secs(1)),
            ..Retention::default()
        };
        assert!(strict.expired(&backups, "a", now).is_empty());
        assert!(Retention::default().expired(&backups, "other", now).is_empty());
    }

    /// Which backups of a year of history survive which policy (times UTC).
    #[test]
    fn periodic_rules_keep_the_newest_backup_of_each_of_the_newest_periods() {
        let at = |text: &str| format!("{text}:00Z").parse::<DateTime<Utc>>().expect("time");
        let now = at("2026-12-31T23:00");
        let history = [
            ("dec31-22h", "2026-12-31T22:00"),
            ("dec31-21h30", "2026-12-31T21:30"),
            ("dec31-21h", "2026-12-31T21:00"),
            ("dec31-09h", "2026-12-31T09:00"),
            ("dec30", "2026-12-30T12:00"),
            ("dec28-mon", "2026-12-28T12:00"),
            ("dec27-sun", "2026-12-27T12:00"),
            ("dec01", "2026-12-01T12:00"),
            ("nov15", "2026-11-15T12:00"),
            ("jan01", "2026-01-01T12:00"),
            ("2025-jun", "2025-06-01T12:00"),
            ("2024-jun", "2024-06-01T12:00"),
        ];
        let backups: Vec<Manifest> = history.iter().map(|(id, time)| crate::manifest::sample(id, at(time))).collect();
        let kept = |retention: Retention| {
            let expired: HashSet<&str> =
                retention.expired(&backups, "dec31-22h", now).iter().map(|m| m.backup_id.as_str()).collect();
            let kept: Vec<&str> = history.iter().map(|(id, _)| *id).filter(|id| !expired.contains(id)).collect();
            kept
        };
        let policy = Retention::default();
        assert_eq!(kept(Retention { keep_hourly: Some(3), ..policy }), ["dec31-22h", "dec31-21h30", "dec31-09h"]);
        assert_eq!(kept(Retention { keep_daily: Some(3), ..policy }), ["dec31-22h", "dec30", "dec28-mon"]);
        // ISO weeks start on Monday: Sunday the 27th is the week before the 28th.
        assert_eq!(kept(Retention { keep_weekly: Some(2), ..policy }), ["dec31-22h", "dec27-sun"]);
        assert_eq!(kept(Retention { keep_monthly: Some(3), ..policy }), ["dec31-22h", "nov15", "jan01"]);
        assert_eq!(kept(Retention { keep_yearly: Some(10), ..policy }), ["dec31-22h", "2025-jun", "2024-jun"]);
        // Rules add up: the last two, the newest of each of two days, and everything
        // younger than a week.
        let combined = Retention {
            keep_last: Some(2),
            keep_daily: Some(2),
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            ..policy
        };
        assert_eq!(
            kept(combined),
            ["dec31-22h", "dec31-21h30", "dec31-21h", "dec31-09h", "dec30", "dec28-mon", "dec27-sun"]
        );
    }
}
