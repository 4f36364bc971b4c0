//! What backup and restore Jobs share: turning a repository, a database and a plugin
//! source of a resource, with the secrets the Job's environment carries, into what the
//! runner uses. Every missing or wrong input has its own reason.

use stowage_api::{Database, PluginRef, PluginSource, Repo};

use super::{JobError, JobInputs};
use crate::archive::Identities;
use crate::plugin::{Plugin, PluginEngine, locate};
use crate::repository::{RepoLocation, RepositoryError};
use crate::settings::DatabaseTarget;
use crate::store::{S3Options, StaticCredentials};

/// The plugin option that carries `tlsCaSecret`.
const TLS_CA_OPTION: &str = "tls-ca";

/// Where `repo` is, for a resource in `namespace`, and how to reach it.
pub(super) fn storage(repo: &Repo, namespace: &str, inputs: &JobInputs) -> Result<(RepoLocation, S3Options), JobError> {
    let name = &repo.name;
    let bucket = repo.bucket_for(namespace).ok_or_else(|| {
        JobError::invalid("InvalidRepo", format!("repository {name:?} sets neither bucket nor bucketNamePrefix"))
    })?;
    let prefix = repo.prefix.clone().unwrap_or_default();
    let location: RepoLocation = format!("s3://{bucket}/{prefix}")
        .parse()
        .map_err(|e: RepositoryError| JobError::invalid("InvalidRepo", e.to_string()))?;
    let credentials = match (&inputs.access_key_id, &inputs.secret_access_key, &repo.secret_name) {
        (Some(access_key_id), Some(secret_access_key), _) => Some(StaticCredentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        }),
        (_, _, Some(secret)) => {
            return Err(JobError::invalid(
                "MissingStorageCredentials",
                format!(
                    "storage credentials of repository {name:?} are missing: Secret {secret:?} needs \
                     accessKeyId and secretAccessKey (or access_key_id and secret_access_key, or \
                     HmacAccessKeyId and HmacSecretAccessKey)"
                ),
            ));
        }
        // No Secret: the AWS SDK's default chain (web identity, Pod Identity, profile, ...).
        (_, _, None) => None,
    };
    let endpoint = repo.service_endpoint.clone().or_else(|| inputs.endpoint.clone()).map(|endpoint| {
        // The original sample gives IBM COS endpoints without a scheme.
        if endpoint.contains("://") { endpoint } else { format!("https://{endpoint}") }
    });
    let s3 = S3Options {
        credentials,
        path_style: repo.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region: repo.region().map(str::to_owned).or_else(|| inputs.region.clone()),
    };
    Ok((location, s3))
}

/// The database to connect to, with the password and TLS CA from the environment.
pub(super) fn database_target(database: &Database, inputs: &JobInputs) -> Result<DatabaseTarget, JobError> {
    let (host, port) =
        database.host_port().map_err(|error| JobError::invalid("InvalidDatabaseEndpoint", error.to_string()))?;
    let password = match &database.password_secret {
        Some(secret) => Some(inputs.database_password.clone().ok_or_else(|| {
            JobError::invalid(
                "MissingDatabaseCredentials",
                format!("STOWAGE_DATABASE_PASSWORD must come from key {:?} of Secret {:?}", secret.key, secret.name),
            )
        })?),
        None => None,
    };
    let mut options: Vec<(String, String)> = database.options.clone().into_iter().collect();
    if let Some(secret) = &database.tls_ca_secret {
        // The convention for every plugin that speaks TLS: the CA arrives as option `tls-ca`.
        let ca = inputs.database_tls_ca.clone().ok_or_else(|| {
            JobError::invalid(
                "MissingDatabaseCredentials",
                format!("STOWAGE_DATABASE_TLS_CA must come from key {:?} of Secret {:?}", secret.key, secret.name),
            )
        })?;
        options.retain(|(name, _)| name != TLS_CA_OPTION);
        options.push((TLS_CA_OPTION.into(), ca));
    }
    Ok(DatabaseTarget { host, port, database: database.name.clone(), user: database.user.clone(), password, options })
}

/// The age identities from the environment that decrypt the backup a run reads.
pub(super) fn identities(inputs: &JobInputs) -> Result<Identities, JobError> {
    match &inputs.age_identity {
        Some(text) => Identities::parse(text).map_err(|e| JobError::invalid("InvalidAgeIdentity", e)),
        None => Ok(Identities::default()),
    }
}

/// Load the plugin `source` names, checked against its pinned sha256.
pub(super) async fn load_plugin(
    engine: &PluginEngine,
    source: &PluginSource,
    inputs: &JobInputs,
) -> Result<Plugin, JobError> {
    let pin = source.sha256.as_deref();
    let plugin = match source.source().map_err(super::invalid_spec)? {
        PluginRef::Builtin(name) => engine.load(&locate(name, &inputs.plugin_path), pin),
        PluginRef::ConfigMap { name, key } => {
            let bytes = config_map_plugin(inputs, name, key)?;
            engine.load_bytes(&format!("configMap:{name}/{key}"), &bytes, pin)
        }
        PluginRef::Url(url) => engine.load_url(url, pin).await,
        PluginRef::Oci(reference) => {
            if let (Some(secret), None) = (&source.pull_secret, &inputs.registry_auth) {
                return Err(JobError::invalid(
                    "MissingRegistryCredentials",
                    format!("STOWAGE_REGISTRY_AUTH must come from key .dockerconfigjson of Secret {secret:?}"),
                ));
            }
            engine.load_oci(reference, pin, inputs.registry_auth.as_deref()).await
        }
    };
    plugin.map_err(JobError::Plugin)
}

/// The plugin component in ConfigMap key `name`/`key`, as the Job mounts it (the Pod
/// starts without it when the ConfigMap or key is missing).
fn config_map_plugin(inputs: &JobInputs, name: &str, key: &str) -> Result<Vec<u8>, JobError> {
    let file = inputs.plugin_file.as_ref().ok_or_else(|| {
        JobError::invalid(
            "PluginNotFound",
            format!("the plugin is in ConfigMap {name}: STOWAGE_PLUGIN_FILE must name where key {key} is mounted"),
        )
    })?;
    std::fs::read(file).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => JobError::invalid(
            "PluginNotFound",
            format!("ConfigMap {name} of the plugin does not exist or has no key {key}"),
        ),
        _ => JobError::invalid("PluginNotFound", format!("reading the plugin of ConfigMap {name}, key {key}: {error}")),
    })
}
