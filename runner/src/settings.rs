//! The database a plugin works on: parsed from a URL, resolved by the host, and handed
//! to the plugin as `database-settings`.

use std::net::SocketAddr;

use percent_encoding::percent_decode_str;

use crate::plugin::{DatabaseSettings, PluginMetadata};

/// Why database settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("database URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error("cannot resolve database host {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("option {name:?} is not accepted by plugin {plugin} (it accepts: {accepted})")]
    UnknownOption { name: String, plugin: String, accepted: String },
    #[error("plugin {plugin} requires option {name:?}")]
    MissingOption { name: String, plugin: String },
}

impl SettingsError {
    /// The CamelCase reason shown in status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            SettingsError::InvalidUrl { .. } => "InvalidDatabaseEndpoint",
            SettingsError::Resolve { .. } => "DatabaseUnresolvable",
            SettingsError::UnknownOption { .. } | SettingsError::MissingOption { .. } => "InvalidPluginOptions",
        }
    }
}

/// Where a database is and how to log in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DatabaseTarget {
    /// Empty for plugins that need no database.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Plugin-specific options, checked against the plugin's metadata.
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .finish()
    }
}

/// The usual port of well-known URL schemes.
fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "postgres" | "postgresql" => 5432,
        "mysql" | "mariadb" => 3306,
        "redis" => 6379,
        "mongodb" => 27017,
        "http" => 80,
        "https" => 443,
        _ => return None,
    })
}

impl DatabaseTarget {
    /// Parse `scheme://[user[:password]@]host[:port]/database[?option=value&...]`.
    pub fn parse(url: &str) -> Result<Self, SettingsError> {
        let invalid = |why: &str| SettingsError::InvalidUrl { url: redact(url), why: why.to_owned() };
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| invalid("the host is missing"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port =
            parsed.port().or_else(|| default_port(parsed.scheme())).ok_or_else(|| invalid("the port is missing"))?;
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let database = decode(parsed.path().trim_start_matches('/'));
        let user = Some(decode(parsed.username())).filter(|u| !u.is_empty());
        let password = parsed.password().map(decode);
        let options = parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        Ok(DatabaseTarget { host, port, database, user, password, options })
    }

    /// The addresses the plugin may connect to: the host's resolution of `host:port`.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, SettingsError> {
        if self.host.is_empty() {
            return Ok(Vec::new());
        }
        let resolve_error = |message: String| SettingsError::Resolve { host: self.host.clone(), message };
        let mut addresses: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| resolve_error(e.to_string()))?
            .collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(resolve_error("no addresses".into()));
        }
        Ok(addresses)
    }

    /// Reject options the plugin does not declare, and require the ones it needs.
    pub fn check_options(&self, metadata: &PluginMetadata) -> Result<(), SettingsError> {
        for (name, _) in &self.options {
            if !metadata.settings.iter().any(|spec| &spec.name == name) {
                let accepted: Vec<&str> = metadata.settings.iter().map(|spec| spec.name.as_str()).collect();
                return Err(SettingsError::UnknownOption {
                    name: name.clone(),
                    plugin: metadata.name.clone(),
                    accepted: if accepted.is_empty() { "none".into() } else { accepted.join(", ") },
                });
            }
        }
        for spec in metadata.settings.iter().filter(|spec| spec.required) {
            if !self.options.iter().any(|(name, _)| name == &spec.name) {
                return Err(SettingsError::MissingOption { name: spec.name.clone(), plugin: metadata.name.clone() });
            }
        }
        Ok(())
    }

    /// The settings record handed to the plugin.
    pub fn to_plugin_settings(&self, addresses: &[SocketAddr]) -> DatabaseSettings {
        DatabaseSettings {
            host: self.host.clone(),
            port: self.port,
            addresses: addresses.iter().map(SocketAddr::to_string).collect(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            options: self.options.clone(),
        }
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets() {
        let target = DatabaseTarget::parse("postgres://app%40corp:s%3Acret@db.example:6543/sales?sslmode=require")
            .expect("valid URL");
        assert_eq!(target.host, "db.example");
        assert_eq!(target.port, 6543);
        assert_eq!(target.database, "sales");
        assert_eq!(target.user.as_deref(), Some("app@corp"));
        assert_eq!(target.password.as_deref(), Some("s:cret"));
        assert_eq!(target.options, vec![("sslmode".to_owned(), "require".to_owned())]);
        assert_eq!(DatabaseTarget::parse("postgresql://localhost/x").expect("valid").port, 5432);
        assert_eq!(DatabaseTarget::parse("postgres://[::1]:5432/x").expect("valid").host, "::1");
    }

    #[test]
    fn bad_urls_are_rejected_without_leaking_the_password() {
        let error = DatabaseTarget::parse("custom://user:topsecret@host/db").expect_err("no port");
        assert!(error.to_string().contains("port is missing"), "{error}");
        assert!(!error.to_string().contains("topsecret"), "{error}");
        assert!(DatabaseTarget::parse("not a url").is_err());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let target = DatabaseTarget::parse("postgres://u:topsecret@h/db").expect("valid");
        assert!(!format!("{target:?}").contains("topsecret"));
    }
}
