//! Runner identities (decision 10): the ServiceAccount and RoleBinding the backup runners
//! of a namespace share, or a DatabaseBackup's own when it asks for a cloud identity, and
//! those of restores and imports. Applied only when changed (decision 9); the shared pair
//! is deleted once no resource of its namespace uses it, a resource's own pair once the
//! resource shares (also the pair an older operator made for every resource).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;
use stowage_api::DatabaseBackup;

use crate::applied::{Applied, digest};
use crate::controller::{Context, Error, apply, is_status};
use crate::workloads::{
    SHARED_RUNNER_IDENTITY, own_runner_identity, role_binding, runner_binding, runner_identity, service_account,
    shares_runner_identity,
};

/// What the operator knows of the runner identities it made.
pub(crate) struct Identities {
    /// Their metadata: whether one is as this process applied it is known without a request.
    accounts: Store<PartialObjectMeta<ServiceAccount>>,
    bindings: Store<PartialObjectMeta<RoleBinding>>,
    /// The identities last applied, by `NAMESPACE/BINDING`, with the resourceVersions of
    /// the ServiceAccount (if the operator's) and RoleBinding after.
    applied: Applied<Versions>,
    /// One lock per namespace: the shared identity is never deleted between a reconcile's
    /// check that it is in place and that reconcile's Job.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The resourceVersions of a runner identity: its ServiceAccount (none for one the
/// operator does not manage) and its RoleBinding.
pub(crate) type Versions = [Option<String>; 2];

impl Identities {
    pub(crate) fn new(
        accounts: Store<PartialObjectMeta<ServiceAccount>>,
        bindings: Store<PartialObjectMeta<RoleBinding>>,
    ) -> Self {
        Identities { accounts, bindings, applied: Applied::default(), locks: Mutex::default() }
    }

    /// The cached resourceVersions of ServiceAccount `account` and RoleBinding `binding`.
    fn versions(&self, namespace: &str, account: Option<&str>, binding: &str) -> Versions {
        fn version<K: Resource<DynamicType = ()> + Clone>(
            store: &Store<K>,
            namespace: &str,
            name: &str,
        ) -> Option<String> {
            store.get(&ObjectRef::new(name).within(namespace))?.meta().resource_version.clone()
        }
        [
            account.and_then(|account| version(&self.accounts, namespace, account)),
            version(&self.bindings, namespace, binding),
        ]
    }

    /// Whether ServiceAccount or RoleBinding `name` exists (as far as the cache knows).
    fn exists(&self, namespace: &str, name: &str) -> bool {
        self.accounts.get(&ObjectRef::new(name).within(namespace)).is_some()
            || self.bindings.get(&ObjectRef::new(name).within(namespace)).is_some()
    }

    pub(crate) async fn ready(&self) -> bool {
        let (accounts, bindings) = futures::join!(self.accounts.wait_until_ready(), self.bindings.wait_until_ready());
        accounts.is_ok() && bindings.is_ok()
    }

    /// Whether the identity of RoleBinding `binding` (and ServiceAccount `account`, if the
    /// operator's) is what this process applied with digest `digest`, untouched since
    /// (deleted or edited, a resourceVersion moved).
    fn current(&self, namespace: &str, account: Option<&str>, binding: &str, digest: u64) -> bool {
        self.applied
            .is_current(&format!("{namespace}/{binding}"), digest, || self.versions(namespace, account, binding))
    }

    /// The identity of RoleBinding `name` is not known to be in place.
    pub(crate) fn forget(&self, namespace: &str, name: &str) {
        self.applied.forget(&format!("{namespace}/{name}"));
    }

    fn lock(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(namespace.to_owned()).or_default())
    }
}

/// Put the runner identity of `backup` in place (applied unless this process applied the
/// same and it was not edited or deleted since). Unless a run of the resource is `active`
/// (its Pods run as the identity they started with): a resource that shares loses the
/// pair of its own, and the shared pair goes once no resource of the namespace uses it.
pub(crate) async fn in_place(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    active: bool,
) -> Result<(), Error> {
    let identities = &context.identities;
    // Only the shared identity can be deleted by another reconcile: a resource's own is
    // not locked, so resources with identities of their own are applied concurrently.
    let shares = shares_runner_identity(backup);
    let lock = identities.lock(namespace);
    let may_retire_shared = !active && identities.exists(namespace, SHARED_RUNNER_IDENTITY);
    let _guard = if shares || may_retire_shared { Some(lock.lock().await) } else { None };
    if !active {
        let other = if shares { own_runner_identity(backup) } else { SHARED_RUNNER_IDENTITY.to_owned() };
        // The cache first: the scan of the namespace's resources is rarely needed.
        if identities.exists(namespace, &other) && (other != SHARED_RUNNER_IDENTITY || !in_use(context, namespace)) {
            delete(context, namespace, &other).await;
        }
    }
    let (account, binding) = (service_account(backup), role_binding(backup));
    let digest = digest(&(account.as_ref().map(Value::to_string), binding.to_string()));
    let (account_name, binding_name) = (runner_identity(backup), runner_binding(backup));
    let account = account.as_ref().map(|account| (account_name.as_str(), account));
    if identities.current(namespace, account.map(|(name, _)| name), &binding_name, digest) {
        return Ok(());
    }
    let versions = apply_identity(&context.client, namespace, account, (&binding_name, &binding)).await?;
    let key = format!("{namespace}/{binding_name}");
    // Without the RoleBinding's version, an absent one would look as applied.
    if versions[1].is_some() {
        identities.applied.applied(&key, digest, versions);
    } else {
        identities.applied.forget(&key);
    }
    Ok(())
}

/// Delete the shared identity of the namespace of `deleted` if no resource uses it now
/// (called when a DatabaseBackup is gone, and for every shared identity at start-up, which
/// covers deletions while no operator ran).
pub(crate) async fn retire_unused(context: &Context, namespace: &str) {
    let lock = context.identities.lock(namespace);
    let _guard = lock.lock().await;
    if !in_use(context, namespace) && context.identities.exists(namespace, SHARED_RUNNER_IDENTITY) {
        delete(context, namespace, SHARED_RUNNER_IDENTITY).await;
    }
}

/// Start-up: retire every shared identity no resource uses (once the caches are complete).
pub(crate) async fn retire_all_unused(context: &Context) {
    let namespaces: Vec<String> = context
        .identities
        .accounts
        .state()
        .iter()
        .filter(|account| account.name_any() == SHARED_RUNNER_IDENTITY)
        .filter_map(|account| account.namespace())
        .collect();
    for namespace in namespaces {
        retire_unused(context, &namespace).await;
    }
}

/// Whether a DatabaseBackup of `namespace` shares the runner identity.
fn in_use(context: &Context, namespace: &str) -> bool {
    context
        .backups
        .state()
        .iter()
        .any(|backup| backup.namespace().as_deref() == Some(namespace) && shares_runner_identity(backup))
}

/// Delete ServiceAccount and RoleBinding `name` (failures are logged: an unused identity
/// harms nothing and is tried again).
async fn delete(context: &Context, namespace: &str, name: &str) {
    context.identities.forget(namespace, name);
    let bindings = Api::<RoleBinding>::namespaced(context.client.clone(), namespace);
    let accounts = Api::<ServiceAccount>::namespaced(context.client.clone(), namespace);
    let params = DeleteParams::default();
    let (binding, account) = futures::join!(bindings.delete(name, &params), accounts.delete(name, &params));
    for error in [binding.err(), account.err()].into_iter().flatten().filter(|error| !is_status(error, 404)) {
        tracing::warn!(%error, %namespace, name, "deleting an unused runner identity failed");
    }
}

/// Apply a runner identity: its ServiceAccount (unless the resource names an existing
/// one) and its RoleBinding, each `(name, object)`; their resourceVersions after.
pub(crate) async fn apply_identity(
    client: &Client,
    namespace: &str,
    account: Option<(&str, &Value)>,
    (binding_name, binding): (&str, &Value),
) -> Result<Versions, Error> {
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), namespace);
    let account = async {
        match account {
            Some((name, account)) => apply(&accounts, "ServiceAccount", name, account).await.map(Some),
            None => Ok(None),
        }
    };
    let (account, binding) = futures::try_join!(account, apply_role_binding(&bindings, binding_name, binding))?;
    Ok([account.and_then(|account| account.metadata.resource_version), binding.metadata.resource_version])
}

/// Apply RoleBinding `name`; one that binds another role (a per-resource Role of operators
/// before decision 10) is replaced, as the API server never changes a `roleRef`.
async fn apply_role_binding(api: &Api<RoleBinding>, name: &str, binding: &Value) -> Result<RoleBinding, Error> {
    match apply(api, "RoleBinding", name, binding).await {
        Err(refused @ Error::Apply { .. }) if matches!(&refused, Error::Apply { source, .. } if is_status(source, 422)) =>
        {
            let failed = |source| Error::Apply { kind: "RoleBinding", name: name.to_owned(), source };
            let existing = api.get(name).await.map_err(failed)?;
            if serde_json::to_value(&existing.role_ref).ok().as_ref() == Some(&binding["roleRef"]) {
                return Err(refused);
            }
            api.delete(name, &DeleteParams::default()).await.map_err(failed)?;
            apply(api, "RoleBinding", name, binding).await
        }
        applied => applied,
    }
}
