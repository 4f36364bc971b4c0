//! The CRDs carry the rules of the validator the operator and the runner share as CEL
//! (`x-kubernetes-validations`), for API servers that check them (1.25+): a spec the API
//! server would refuse is one the validator refuses too, and each rule written as CEL
//! refuses what the validator refuses. Evaluated here as an API server does.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use stowage_api::{DatabaseBackup, DatabaseRestore, DatabaseSnapshotImport};

/// The messages of the CRD's rules that `object` breaks.
fn refused_by_schema<K: CustomResourceExt>(object: &Value) -> Vec<String> {
    let crd = K::crd();
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
    let schema = serde_json::to_value(schema).expect("schema as JSON");
    match kube_cel::Validator::new().validate(&schema, object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|error| error.to_string()).collect(),
    }
}

/// `spec` with `change` merged into it (a `null` removes a field).
fn merged(spec: &Value, change: &Value) -> Value {
    let mut spec = spec.clone();
    if let (Some(spec), Some(change)) = (spec.as_object_mut(), change.as_object()) {
        for (key, value) in change {
            if value.is_null() {
                spec.remove(key);
            } else {
                spec.insert(key.clone(), value.clone());
            }
        }
    }
    spec
}

fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "stowage.dev/v1alpha1", "kind": kind, "metadata": {"name": "x", "namespace": "shop"}, "spec": spec})
}

/// Each case: a change of a valid spec, and whether the CEL rules catch it.
fn check<K, F>(kind: &str, valid: Value, cases: &[(Value, bool)], validate: F)
where
    K: CustomResourceExt,
    F: Fn(&Value) -> bool,
{
    assert!(validate(&valid), "the valid {kind} spec is refused by the validator");
    let refused = refused_by_schema::<K>(&object(kind, valid.clone()));
    assert!(refused.is_empty(), "the valid {kind} spec is refused by the schema: {refused:?}");
    for (change, caught) in cases {
        let spec = merged(&valid, change);
        let by_schema = refused_by_schema::<K>(&object(kind, spec.clone()));
        assert!(!validate(&spec), "{kind} {change}: not refused by the validator");
        assert_eq!(!by_schema.is_empty(), *caught, "{kind} {change}: the schema refuses {by_schema:?}");
    }
}

#[test]
fn a_database_backup_the_schema_refuses_is_invalid() {
    let valid = json!({
        "repos": [{"name": "s3", "secretName": "s3", "bucket": "backups"}],
        "plugin": {"builtin": "postgres"},
        "database": {"endpoint": "db:5432", "name": "shop"},
        "scheduledTrigger": {"schedule": "0 3 * * *", "repo": "s3"}
    });
    let sha256 = "ab".repeat(32);
    let cases = [
        (json!({"plugin": {}}), true),
        (json!({"plugin": {"builtin": "postgres", "oci": "registry.example/p:1"}}), true),
        (json!({"plugin": {"url": "http://plugins.example/p.wasm", "sha256": sha256}}), true),
        (json!({"plugin": {"url": "https://plugins.example/p.wasm"}}), true),
        (json!({"plugin": {"builtin": "postgres", "pullSecret": "registry"}}), true),
        (json!({"repos": [{"name": "s3", "secretName": "s3"}]}), true),
        (json!({"serviceAccountName": "backups", "serviceAccountTemplate": {"metadata": {}}}), true),
        // Rules CEL cannot say: the operator's check stays the authority.
        (json!({"scheduledTrigger": {"schedule": "every day", "repo": "s3"}}), false),
        (json!({"compression": "brotli"}), false),
    ];
    check::<DatabaseBackup, _>("DatabaseBackup", valid, &cases, |spec| {
        serde_json::from_value::<stowage_api::DatabaseBackupSpec>(spec.clone()).is_ok_and(|s| s.validate().is_ok())
    });
    // An oci plugin with its pull Secret and a pinned URL pass both.
    for plugin in [
        json!({"oci": "registry.example/p:1", "pullSecret": "registry"}),
        json!({"url": "https://plugins.example/p.wasm", "sha256": "ab".repeat(32)}),
    ] {
        let spec = json!({
            "repos": [{"name": "s3", "bucketNamePrefix": "backups-"}],
            "plugin": plugin,
            "database": {"endpoint": "db:5432", "name": "shop"}
        });
        assert!(refused_by_schema::<DatabaseBackup>(&object("DatabaseBackup", spec)).is_empty(), "{plugin}");
    }
}

#[test]
fn a_database_restore_the_schema_refuses_is_invalid() {
    let valid = json!({"snapshot": "shop-20261204t101500z-0a1b2c"});
    let cases = [
        (json!({"databaseBackup": {"name": "shop"}}), true),
        (json!({"snapshot": null}), true),
        (json!({"plugin": {"builtin": "postgres", "configMap": {"name": "plugins", "key": "p.wasm"}}}), true),
    ];
    check::<DatabaseRestore, _>("DatabaseRestore", valid, &cases, |spec| {
        serde_json::from_value::<stowage_api::DatabaseRestoreSpec>(spec.clone()).is_ok_and(|s| s.validate().is_ok())
    });
}

#[test]
fn a_snapshot_import_the_schema_refuses_is_invalid() {
    let valid = json!({"repo": {"name": "s3", "bucketNamePrefix": "backups-"}, "sourceNamespace": "shop"});
    let cases = [
        (json!({"sourceNamespace": null}), true),
        (json!({"repo": {"name": "s3", "bucket": "backups"}, "sourceNamespace": null, "databaseBackup": "shop"}), true),
        (json!({"repo": {"name": "s3"}}), true),
    ];
    check::<DatabaseSnapshotImport, _>("DatabaseSnapshotImport", valid, &cases, |spec| {
        serde_json::from_value::<stowage_api::DatabaseSnapshotImportSpec>(spec.clone())
            .is_ok_and(|s| s.validate().is_ok())
    });
}
