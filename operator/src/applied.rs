//! What this process applied (decision 9), so that an object already as wanted costs no
//! request: per key, the digest of what was sent and the resourceVersions the API server
//! answered with. While neither the wanted object nor the versions in the caches change,
//! the object is in place; an edit, a deletion or a write by anyone else moves a version.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// The digest of an object (or several) as applied.
pub(crate) fn digest(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The applies of one kind of object, by key; `V` is the resourceVersion(s) after one.
#[derive(Debug)]
pub(crate) struct Applied<V> {
    /// `None` while an apply's outcome is unknown (sent, or changed since by a patch):
    /// the object may exist, but is not known to be as wanted.
    known: Mutex<HashMap<String, Option<(u64, V)>>>,
}

impl<V> Default for Applied<V> {
    fn default() -> Self {
        Applied { known: Mutex::default() }
    }
}

impl<V: PartialEq> Applied<V> {
    /// Whether `key` was applied with `digest` and `cached()`, its versions in the caches
    /// now, are those the apply left.
    pub(crate) fn is_current(&self, key: &str, digest: u64, cached: impl FnOnce() -> V) -> bool {
        let Ok(known) = self.known.lock() else { return false };
        matches!(known.get(key), Some(Some((applied, versions))) if *applied == digest && cached() == *versions)
    }

    /// Whether an apply of `key` was sent and no delete since (when the lock is poisoned,
    /// it may have been).
    pub(crate) fn may_exist(&self, key: &str) -> bool {
        self.known.lock().map_or(true, |known| known.contains_key(key))
    }

    /// `key` may exist but is not known to be as wanted: an apply is about to be sent, or
    /// another write changed it.
    pub(crate) fn unknown(&self, key: &str) {
        self.set(key, Some(None));
    }

    /// `key` was applied with `digest` and is at `versions`.
    pub(crate) fn applied(&self, key: &str, digest: u64, versions: V) {
        self.set(key, Some(Some((digest, versions))));
    }

    /// `key` was deleted, or is not known to be in place.
    pub(crate) fn forget(&self, key: &str) {
        self.set(key, None);
    }

    /// Forget every key that starts with `prefix`.
    pub(crate) fn forget_prefix(&self, prefix: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.retain(|key, _| !key.starts_with(prefix));
        }
    }

    fn set(&self, key: &str, state: Option<Option<(u64, V)>>) {
        if let Ok(mut known) = self.known.lock() {
            match state {
                Some(state) => known.insert(key.to_owned(), state),
                None => known.remove(key),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_current_only_as_applied_and_untouched() {
        let applied: Applied<String> = Applied::default();
        let wanted = digest(&"spec");
        assert!(!applied.may_exist("a") && !applied.is_current("a", wanted, || "1".into()));
        applied.unknown("a");
        assert!(applied.may_exist("a") && !applied.is_current("a", wanted, || "1".into()));
        applied.applied("a", wanted, "1".into());
        assert!(applied.is_current("a", wanted, || "1".into()));
        assert!(!applied.is_current("a", wanted, || "2".into()), "written since");
        assert!(!applied.is_current("a", digest(&"other spec"), || "1".into()), "wanted otherwise");
        applied.applied("b/x", wanted, "1".into());
        applied.forget_prefix("b/");
        applied.forget("a");
        assert!(!applied.may_exist("a") && !applied.may_exist("b/x"));
    }
}
