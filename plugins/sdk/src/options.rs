//! Plugin options, as given in `database-settings.options`.

use std::str::FromStr;

use crate::{DatabaseSettings, PluginError, SettingSpec};

/// An optional setting for [`crate::PluginMetadata::settings`], with the default it
/// takes when missing (documentation only: the plugin applies it).
pub fn optional(name: &str, description: &str, default: Option<&str>) -> SettingSpec {
    SettingSpec {
        name: name.into(),
        description: description.into(),
        required: false,
        default_value: default.map(Into::into),
    }
}

/// Typed access to a plugin's options. The host has already rejected options the
/// plugin's metadata does not declare.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    settings: &'a DatabaseSettings,
}

impl<'a> Options<'a> {
    /// The options of `settings`.
    pub fn new(settings: &'a DatabaseSettings) -> Self {
        Options { settings }
    }

    /// The raw value of option `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.settings.options.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Option `name` parsed as `T`, or `default` when it is not set.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, PluginError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|_| PluginError::InvalidSettings(format!("option {name}: {value:?} is not a valid value"))),
        }
    }

    /// Option `name` as a size in bytes, written as a number with a unit `kB`, `MB`, `GB`
    /// or `TB` (powers of 1024, as PostgreSQL and MariaDB write them) or none; `default`
    /// when it is not set. Sizes below `minimum` are refused.
    pub fn size_or(&self, name: &str, default: u64, minimum: u64) -> Result<u64, PluginError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        let trimmed = value.trim();
        let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(digits);
        let shift = match unit.trim() {
            "" => Some(0),
            "kB" => Some(10),
            "MB" => Some(20),
            "GB" => Some(30),
            "TB" => Some(40),
            _ => None,
        };
        shift
            .and_then(|shift| number.parse::<u64>().ok()?.checked_mul(1 << shift))
            .filter(|bytes| *bytes >= minimum)
            .ok_or_else(|| {
                let minimum = if minimum.is_multiple_of(1 << 20) {
                    format!("{}MB", minimum >> 20)
                } else {
                    format!("{minimum} bytes")
                };
                PluginError::InvalidSettings(format!(
                    "option {name}: {value:?} is not a size of at least {minimum} (a number with kB, MB, GB or TB)"
                ))
            })
    }

    /// Option `name`, which must be set.
    pub fn required(&self, name: &str) -> Result<&'a str, PluginError> {
        self.get(name).ok_or_else(|| PluginError::InvalidSettings(format!("option {name} is required")))
    }
}
