//! The rules a `DatabaseBackup` spec follows, in one place: the operator checks them
//! before it creates anything (an invalid spec gets `Ready=False/InvalidSpec` and no
//! Job), and the runner reads the spec its Job was created from through the same typed
//! accessors, so the two can never disagree about what is valid.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::drill::{drill_conflict, scratch_name};
use crate::resource::{Database, DatabaseBackupSpec, Limits, PluginSource, Repo};
use crate::schedule::Schedule;

/// A run may take this long unless the resource sets `limits.deadline`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// One rule a field breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's path, e.g. `spec.scheduledTrigger.schedule`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Every rule a spec breaks, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidSpec {}

/// Where the plugin component comes from, once `spec.plugin` is known to name one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginRef<'a> {
    /// A plugin of the runner image.
    Builtin(&'a str),
    /// A key of a ConfigMap in the resource's namespace.
    ConfigMap { name: &'a str, key: &'a str },
    /// An `https://` URL, pinned by `sha256`.
    Url(&'a str),
    /// An OCI artifact, pinned by its digest or `sha256`.
    Oci(&'a str),
}

impl fmt::Display for PluginRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Builtin(name) => write!(f, "{name}"),
            PluginRef::ConfigMap { name, key } => write!(f, "configMap:{name}/{key}"),
            PluginRef::Url(url) => write!(f, "{url}"),
            PluginRef::Oci(reference) => write!(f, "oci:{reference}"),
        }
    }
}

impl PluginSource {
    /// The one source this names: `builtin`, `configMap`, `url` (https, with `sha256`)
    /// or `oci`; `pullSecret` only with `oci`.
    pub fn source(&self) -> Result<PluginRef<'_>, FieldError> {
        let field = |name: &str| format!("spec.plugin.{name}");
        let source = match (&self.builtin, &self.config_map, &self.url, &self.oci) {
            (Some(name), None, None, None) => PluginRef::Builtin(name),
            (None, Some(map), None, None) => PluginRef::ConfigMap { name: &map.name, key: &map.key },
            (None, None, Some(url), None) => {
                if !url.starts_with("https://") {
                    return Err(FieldError::new(field("url"), format!("{url:?} is not an https:// URL")));
                }
                if self.sha256.is_none() {
                    return Err(FieldError::new(
                        field("sha256"),
                        "a plugin from a URL must be pinned: set sha256 to the component's digest",
                    ));
                }
                PluginRef::Url(url)
            }
            (None, None, None, Some(reference)) => PluginRef::Oci(reference),
            (None, None, None, None) => {
                return Err(FieldError::new("spec.plugin", "names no source: set builtin, configMap, url or oci"));
            }
            _ => {
                return Err(FieldError::new(
                    "spec.plugin",
                    "names more than one source: set exactly one of builtin, configMap, url and oci",
                ));
            }
        };
        if self.pull_secret.is_some() && !matches!(source, PluginRef::Oci(_)) {
            return Err(FieldError::new(field("pullSecret"), "applies to oci plugins only"));
        }
        Ok(source)
    }
}

/// How artifact bytes are compressed before they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "algorithm")]
pub enum Compression {
    /// Stored as written.
    None,
    /// Zstandard at the given level (1-22; 3 is zstd's default).
    Zstd { level: i32 },
}

impl Compression {
    /// The levels `zstd:LEVEL` accepts.
    pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// `none`, `zstd` (level 3) or `zstd:N`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once(':') {
            None if value == "none" => Ok(Compression::None),
            None if value == "zstd" => Ok(Compression::default()),
            Some(("zstd", level)) => match level.parse::<i32>() {
                Ok(level) if Self::ZSTD_LEVELS.contains(&level) => Ok(Compression::Zstd { level }),
                _ => Err(format!("zstd level {level:?} is not between 1 and 22")),
            },
            _ => Err(format!("unknown compression {value:?}; use none, zstd or zstd:LEVEL")),
        }
    }
}

/// An age X25519 public key (`age1...`).
/// The longest label value Kubernetes accepts.
pub const LABEL_VALUE_MAX: usize = 63;

/// Whether a resource called `name` can have workloads: the Jobs and CronJobs the
/// operator makes for it carry its name as a label value (how it finds them again).
pub fn name_fits_a_label(name: &str) -> Result<(), FieldError> {
    if name.len() <= LABEL_VALUE_MAX {
        return Ok(());
    }
    Err(FieldError::new(
        "metadata.name",
        format!(
            "has {} characters: the Jobs and CronJobs made for it carry it as a label value, which Kubernetes \
             limits to {LABEL_VALUE_MAX}; choose a shorter name",
            name.len()
        ),
    ))
}

pub fn parse_age_recipient(key: &str) -> Result<age::x25519::Recipient, String> {
    key.trim().parse::<age::x25519::Recipient>().map_err(|e| format!("age recipient {key:?}: {e}"))
}

fn parse_duration(field: &str, value: &str) -> Result<Duration, FieldError> {
    humantime::parse_duration(value)
        .map_err(|e| FieldError::new(field, format!("{value:?} is not a duration like 90m, 6h or 30d: {e}")))
}

impl Limits {
    /// How long a run with `limits` may take: `limits.deadline`, or [`DEFAULT_DEADLINE`].
    pub fn deadline_of(limits: Option<&Limits>) -> Result<Duration, FieldError> {
        match limits.and_then(|l| l.deadline.as_deref()) {
            Some(value) => parse_duration("spec.limits.deadline", value),
            None => Ok(DEFAULT_DEADLINE),
        }
    }
}

impl DatabaseBackupSpec {
    /// The repository a trigger (at `field`) names.
    pub fn repo(&self, field: &str, name: &str) -> Result<&Repo, FieldError> {
        self.repos.iter().find(|repo| repo.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.repos.iter().map(|r| r.name.as_str()).collect();
            FieldError::new(
                field,
                format!("names repository {name:?}, which is not in spec.repos ({})", known.join(", ")),
            )
        })
    }

    /// `compression`, zstd level 3 when unset.
    pub fn compression(&self) -> Result<Compression, FieldError> {
        match &self.compression {
            Some(value) => value.parse().map_err(|message| FieldError::new("spec.compression", message)),
            None => Ok(Compression::default()),
        }
    }

    /// The age recipients backups are encrypted to; none when unset.
    pub fn age_recipients(&self) -> Result<Vec<age::x25519::Recipient>, FieldError> {
        let keys = self.encryption.as_ref().map(|e| e.age_recipients.as_slice()).unwrap_or_default();
        keys.iter()
            .map(|key| {
                parse_age_recipient(key).map_err(|message| FieldError::new("spec.encryption.ageRecipients", message))
            })
            .collect()
    }

    /// How long one run may take.
    pub fn deadline(&self) -> Result<Duration, FieldError> {
        Limits::deadline_of(self.limits.as_ref())
    }

    /// `retention.maxAge`.
    pub fn max_age(&self) -> Result<Option<Duration>, FieldError> {
        let value = self.retention.as_ref().and_then(|r| r.max_age.as_deref());
        value.map(|value| parse_duration("spec.retention.maxAge", value)).transpose()
    }

    /// The repository restore drills read: the one `verification.repo` names, or the
    /// scheduled trigger's, the manual trigger's, the only one.
    pub fn verification_repo(&self) -> Result<&Repo, FieldError> {
        let field = "spec.verification.repo";
        let named = self.verification.as_ref().and_then(|v| v.repo.as_deref());
        let name = named
            .or(self.scheduled_trigger.as_ref().map(|t| t.repo.as_str()))
            .or(self.manual_trigger.as_ref().map(|t| t.repo.as_str()));
        match (name, self.repos.as_slice()) {
            (Some(name), _) => self.repo(field, name),
            (None, [only]) => Ok(only),
            (None, _) => {
                Err(FieldError::new(field, "names no repository, and no trigger or single repository implies one"))
            }
        }
    }

    /// The scratch database of restore drills: `verification.target` over the backed-up
    /// database, named `<name>_stowage_drill` (see [`scratch_name`]) unless the target
    /// names it.
    pub fn drill_target(&self) -> Database {
        let target = self.verification.as_ref().and_then(|v| v.target.clone()).unwrap_or_default();
        let mut database = target.over(&self.database);
        if target.name.is_none() {
            database.name = scratch_name(&self.database.name);
        }
        database
    }

    /// Check every rule; all broken ones are named.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Vec::new();
        if self.service_account_name.is_some() && self.service_account_template.is_some() {
            errors.push(FieldError::new(
                "spec.serviceAccountName",
                "set serviceAccountName or serviceAccountTemplate, not both",
            ));
        }
        let mut names = BTreeSet::new();
        for repo in &self.repos {
            let field = format!("spec.repos[{}]", repo.name);
            if !names.insert(repo.name.as_str()) {
                errors.push(FieldError::new(&field, "the name is used by another repository"));
            }
            if repo.bucket.is_none() && repo.bucket_name_prefix.is_none() {
                errors.push(FieldError::new(&field, "sets neither bucket nor bucketNamePrefix"));
            }
            if let (Some(region), Some(cos_region)) = (&repo.region, &repo.cos_region)
                && region != cos_region
            {
                errors.push(FieldError::new(
                    format!("{field}.cosRegion"),
                    format!("{cos_region:?} differs from region {region:?}: set one of them"),
                ));
            }
        }
        let mut check = |result: Result<(), FieldError>| {
            if let Err(error) = result {
                errors.push(error);
            }
        };
        check(self.plugin.source().map(drop));
        check(self.database.host_port().map(drop));
        if let Some(trigger) = &self.manual_trigger {
            check(self.repo("spec.manualTrigger.repo", &trigger.repo).map(drop));
        }
        if let Some(trigger) = &self.scheduled_trigger {
            check(self.repo("spec.scheduledTrigger.repo", &trigger.repo).map(drop));
            let schedule = trigger.schedule.parse::<Schedule>();
            check(schedule.map(drop).map_err(|m| FieldError::new("spec.scheduledTrigger.schedule", m)));
            if let Some(zone) = &trigger.time_zone {
                check(check_time_zone(zone).map_err(|m| FieldError::new("spec.scheduledTrigger.timeZone", m)));
            }
        }
        if let Some(verification) = &self.verification {
            let schedule = verification.schedule.parse::<Schedule>();
            check(schedule.map(drop).map_err(|m| FieldError::new("spec.verification.schedule", m)));
            check(self.verification_repo().map(drop));
            let target = self.drill_target();
            let same_server = target.endpoint.eq_ignore_ascii_case(&self.database.endpoint);
            let plugin = self.plugin.builtin.as_deref();
            if let Some(conflict) = drill_conflict(plugin, &self.database.name, &target.name, same_server) {
                check(Err(FieldError::new("spec.verification.target", conflict)));
            }
            let endpoint = target.host_port().map(drop);
            check(endpoint.map_err(|error| FieldError::new("spec.verification.target.endpoint", error.message)));
        }
        check(self.compression().map(drop));
        check(self.age_recipients().map(drop));
        check(self.deadline().map(drop));
        check(self.max_age().map(drop));
        if errors.is_empty() { Ok(()) } else { Err(InvalidSpec(errors)) }
    }
}

impl Database {
    /// `endpoint` as host and port (`[v6]:port` allowed).
    pub fn host_port(&self) -> Result<(String, u16), FieldError> {
        self.endpoint
            .rsplit_once(':')
            .and_then(|(host, port)| {
                let host = host.trim_matches(['[', ']']);
                (!host.is_empty()).then_some(())?;
                Some((host.to_owned(), port.parse::<u16>().ok()?))
            })
            .ok_or_else(|| FieldError::new("spec.database.endpoint", format!("{:?} is not host:port", self.endpoint)))
    }
}

/// The shape of an IANA time zone name (`UTC`, `Europe/Berlin`, `America/Argentina/Salta`,
/// `Etc/GMT+5`); whether the zone exists is the API server's to say.
fn check_time_zone(zone: &str) -> Result<(), String> {
    let valid = !zone.is_empty()
        && zone != "Local"
        && zone.split('/').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        });
    if valid { Ok(()) } else { Err(format!("{zone:?} is not an IANA time zone name like Europe/Berlin")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::DatabaseBackup;

    fn spec(patch: serde_json::Value) -> DatabaseBackupSpec {
        let mut spec = serde_json::json!({
            "repos": [{"name": "s3", "secretName": "keys", "bucket": "backups"}],
            "plugin": {"builtin": "postgres"},
            "database": {"endpoint": "db:5432", "name": "shop"},
            "scheduledTrigger": {"schedule": "0 * * * *", "repo": "s3"}
        });
        json_merge(&mut spec, patch);
        serde_json::from_value(spec).expect("spec")
    }

    fn json_merge(target: &mut serde_json::Value, patch: serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
                for (key, value) in patch {
                    json_merge(target.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (target, patch) => *target = patch,
        }
    }

    fn fields(spec: &DatabaseBackupSpec) -> Vec<String> {
        spec.validate().err().map(|e| e.0.into_iter().map(|e| e.field).collect()).unwrap_or_default()
    }

    #[test]
    fn a_valid_spec_passes_and_its_accessors_resolve() {
        let spec = spec(serde_json::json!({"compression": "zstd:19", "limits": {"deadline": "2h"}}));
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.compression(), Ok(Compression::Zstd { level: 19 }));
        assert_eq!(spec.deadline(), Ok(Duration::from_secs(7200)));
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 3 }));
        assert!("zstd:23".parse::<Compression>().is_err());
        assert!("zstd:0".parse::<Compression>().is_err());
        assert_eq!(spec.plugin.source(), Ok(PluginRef::Builtin("postgres")));
        assert_eq!(spec.database.host_port(), Ok(("db".into(), 5432)));
        for zone in ["UTC", "Europe/Berlin", "America/Argentina/Salta", "Etc/GMT+5"] {
            assert_eq!(check_time_zone(zone), Ok(()), "{zone}");
        }
        for zone in ["", "Local", "Europe/", "Mars Base", "../etc/passwd"] {
            assert!(check_time_zone(zone).is_err(), "{zone}");
        }
        let v6 = spec_with_endpoint("[fd00::1]:5432");
        assert_eq!(v6.database.host_port(), Ok(("fd00::1".into(), 5432)));
    }

    fn spec_with_endpoint(endpoint: &str) -> DatabaseBackupSpec {
        spec(serde_json::json!({"database": {"endpoint": endpoint}}))
    }

    #[test]
    fn names_longer_than_a_label_value_are_refused() {
        assert_eq!(name_fits_a_label(&"a".repeat(63)), Ok(()));
        let refused = name_fits_a_label(&"a".repeat(64)).expect_err("too long");
        assert_eq!(refused.field, "metadata.name");
        assert!(refused.message.starts_with("has 64 characters"), "{refused}");
    }

    #[test]
    fn every_broken_rule_is_named_by_its_field() {
        let broken = spec(serde_json::json!({
            "repos": [
                {"name": "s3", "secretName": "keys"},
                {"name": "s3", "secretName": "keys", "bucket": "b", "region": "eu", "cosRegion": "us"}
            ],
            "plugin": {"builtin": "postgres", "url": "https://example.com/p.wasm"},
            "database": {"endpoint": "db"},
            "manualTrigger": {"time": "t", "repo": "elsewhere"},
            "scheduledTrigger": {"schedule": "0 * * *", "repo": "s3"},
            "compression": "gzip",
            "encryption": {"ageRecipients": ["age1nope"]},
            "limits": {"deadline": "forever"},
            "retention": {"maxAge": "a while"}
        }));
        assert_eq!(
            fields(&broken),
            [
                "spec.repos[s3]",
                "spec.repos[s3]",
                "spec.repos[s3].cosRegion",
                "spec.plugin",
                "spec.database.endpoint",
                "spec.manualTrigger.repo",
                "spec.scheduledTrigger.schedule",
                "spec.compression",
                "spec.encryption.ageRecipients",
                "spec.limits.deadline",
                "spec.retention.maxAge",
            ]
        );
        let message = broken.validate().expect_err("invalid").to_string();
        assert!(message.contains("spec.manualTrigger.repo: names repository \"elsewhere\""), "{message}");
    }

    #[test]
    fn plugin_sources_are_one_of_and_urls_are_pinned() {
        let source = |plugin: serde_json::Value| {
            spec(serde_json::json!({"plugin": plugin})).plugin.source().map(|s| s.to_string())
        };
        let field = |plugin: serde_json::Value| source(plugin).expect_err("invalid").field;
        assert_eq!(field(serde_json::json!({"builtin": null})), "spec.plugin");
        assert_eq!(
            field(serde_json::json!({"builtin": null, "url": "https://example.com/p.wasm"})),
            "spec.plugin.sha256"
        );
        assert_eq!(field(serde_json::json!({"builtin": null, "url": "http://example.com/p.wasm"})), "spec.plugin.url");
        assert_eq!(field(serde_json::json!({"pullSecret": "registry"})), "spec.plugin.pullSecret");
        let oci = source(serde_json::json!({"builtin": null, "oci": "r.example/p:1", "pullSecret": "registry"}));
        assert_eq!(oci, Ok("oci:r.example/p:1".to_owned()));
    }

    /// The shipped samples, with the seed's field names (`cosRegion`), are valid.
    #[test]
    fn the_samples_are_valid() {
        for sample in [
            include_str!("../../deploy/samples/databasebackup-manual.yaml"),
            include_str!("../../deploy/samples/databasebackup-scheduled.yaml"),
        ] {
            let resource: DatabaseBackup = serde_yaml::from_str(sample).expect("sample");
            assert_eq!(resource.spec.validate(), Ok(()), "{sample}");
        }
        let manual: DatabaseBackup =
            serde_yaml::from_str(include_str!("../../deploy/samples/databasebackup-manual.yaml")).expect("sample");
        assert_eq!(manual.spec.repos[0].region(), Some("eu-geo"));
    }
}
