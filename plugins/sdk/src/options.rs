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

    /// Option `name`, which must be set.
    pub fn required(&self, name: &str) -> Result<&'a str, PluginError> {
        self.get(name).ok_or_else(|| PluginError::InvalidSettings(format!("option {name} is required")))
    }
}
