//! One run per backup configuration: a lock object in the repository.
//!
//! ```text
//! <prefix>/<namespace>/<name>/lock.json
//! ```
//! It is created atomically (`If-None-Match: *`), names its holder, and carries an expiry
//! that a heartbeat extends by compare-and-swap (`If-Match`), so a run always knows
//! whether it still holds it. A lock whose holder stopped renewing it (or, on the same
//! host, whose process is gone) is stale and may be taken over, again by compare-and-swap,
//! so two runs can never both believe they hold it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::store::{ObjectStore, Precondition, StoreError};

/// The lock's object name inside a configuration's directory.
pub const LOCK_OBJECT: &str = "lock.json";
/// How long a lock lives without a heartbeat.
pub const LOCK_TTL: Duration = Duration::from_secs(60);
/// How often the holder renews it.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often a waiting run looks again.
const RETRY: Duration = Duration::from_secs(2);

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another backup of {config} is running (run {} on {}, pid {}, since {}); this run did not start",
        .holder.run_id, .holder.host, .holder.pid, .holder.acquired_at.format("%Y-%m-%d %H:%M:%S UTC")
    )]
    Held { config: String, holder: Box<Holder> },
    #[error("the lock of {config} was taken over by another run while this one was running")]
    Lost { config: String },
    #[error("the lock of {config}: {source}")]
    Store { config: String, source: StoreError },
}

/// Who holds a lock, as stored in `lock.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Holder {
    /// Whether nobody can be relying on this lock any more: it expired, or it was taken
    /// on this host by a process that no longer exists.
    fn is_stale(&self, now: DateTime<Utc>, host: &str) -> bool {
        self.expires_at <= now || self.is_dead(host)
    }

    /// Whether the holder is certainly gone: its process on this host no longer exists.
    /// (An expired lock says only that its holder stopped renewing it.)
    fn is_dead(&self, host: &str) -> bool {
        self.host == host && !process_exists(self.pid)
    }
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// This machine's name: the Pod name in Kubernetes.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|name| name.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

/// A held lock. Its heartbeat runs until [`release`](Self::release); if the lock is
/// lost, [`check`](Self::check) says so and the run must not commit.
#[derive(Debug)]
pub struct RepoLock {
    state: Arc<LockState>,
    heartbeat: JoinHandle<()>,
    dead_predecessor: Option<String>,
}

#[derive(Debug)]
struct LockState {
    store: Arc<dyn ObjectStore>,
    key: String,
    config: String,
    holder: Mutex<(Holder, String)>,
    lost: AtomicBool,
}

impl LockState {
    /// Extend the lock by compare-and-swap on the version we wrote last.
    async fn renew(&self) -> Result<(), LockError> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(LockError::Lost { config: self.config.clone() });
        }
        let mut guard = self.holder.lock().await;
        let (holder, etag) = &mut *guard;
        let mut renewed = holder.clone();
        renewed.expires_at = Utc::now() + LOCK_TTL;
        let body = encode(&renewed);
        match self.store.put_if(&self.key, body, Precondition::Matches(etag.clone())).await {
            Ok(Some(new_etag)) => {
                *holder = renewed;
                *etag = new_etag;
                Ok(())
            }
            Ok(None) => {
                // A retried request whose first attempt succeeded changed the version
                // itself: the lock is still ours if it still names this run.
                let fail = |source| LockError::Store { config: self.config.clone(), source };
                let current = self.store.get_versioned(&self.key).await.map_err(fail)?;
                match current.map(|c| (serde_json::from_slice::<Holder>(&c.body), c.etag)) {
                    Some((Ok(stored), new_etag)) if stored.run_id == holder.run_id => {
                        *holder = stored;
                        *etag = new_etag;
                        Ok(())
                    }
                    _ => {
                        self.lost.store(true, Ordering::Relaxed);
                        Err(LockError::Lost { config: self.config.clone() })
                    }
                }
            }
            Err(source) => Err(LockError::Store { config: self.config.clone(), source }),
        }
    }
}

fn encode(holder: &Holder) -> Bytes {
    // A struct of strings and numbers always serializes.
    Bytes::from(serde_json::to_vec_pretty(holder).unwrap_or_default())
}

impl RepoLock {
    /// Take the lock at `key` for `config` (`namespace/name`), waiting up to `wait` for
    /// a running holder to finish.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        key: String,
        config: String,
        run_id: &str,
        wait: Duration,
    ) -> Result<Self, LockError> {
        let host = host_name();
        let deadline = tokio::time::Instant::now() + wait;
        let fail = |source| LockError::Store { config: config.clone(), source };
        loop {
            let now = Utc::now();
            let holder = Holder {
                run_id: run_id.to_owned(),
                host: host.clone(),
                pid: std::process::id(),
                acquired_at: now,
                expires_at: now + LOCK_TTL,
            };
            let body = encode(&holder);
            if let Some(etag) = store.put_if(&key, body.clone(), Precondition::Absent).await.map_err(fail)? {
                return Ok(Self::held(store, key, config, holder, etag, None));
            }
            let current = store.get_versioned(&key).await.map_err(fail)?;
            let Some(current) = current else { continue };
            match serde_json::from_slice::<Holder>(&current.body) {
                // Our own creation, whose response was lost and the request retried.
                Ok(ours) if ours.run_id == run_id => {
                    return Ok(Self::held(store, key, config, ours, current.etag, None));
                }
                Ok(other) if !other.is_stale(now, &host) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LockError::Held { config, holder: Box::new(other) });
                    }
                    tracing::info!(holder = %other.run_id, host = %other.host, "waiting for another backup of this configuration");
                    tokio::time::sleep(RETRY).await;
                }
                stale => {
                    // Expired, dead or unreadable: take it over, unless someone else just did.
                    if let Ok(other) = &stale {
                        tracing::warn!(holder = %other.run_id, host = %other.host, "taking over a stale lock");
                    }
                    let dead = stale.ok().filter(|other| other.is_dead(&host)).map(|other| other.run_id);
                    if let Some(etag) =
                        store.put_if(&key, body, Precondition::Matches(current.etag)).await.map_err(fail)?
                    {
                        return Ok(Self::held(store, key, config, holder, etag, dead));
                    }
                }
            }
        }
    }

    fn held(
        store: Arc<dyn ObjectStore>,
        key: String,
        config: String,
        holder: Holder,
        etag: String,
        dead_predecessor: Option<String>,
    ) -> Self {
        let state = Arc::new(LockState {
            store,
            key,
            config,
            holder: Mutex::new((holder, etag)),
            lost: AtomicBool::new(false),
        });
        let beating = Arc::clone(&state);
        let heartbeat = tokio::spawn(async move {
            let mut interval = tokio::time::interval(HEARTBEAT);
            interval.tick().await;
            loop {
                interval.tick().await;
                match beating.renew().await {
                    Ok(()) => {}
                    Err(error @ LockError::Lost { .. }) => {
                        tracing::error!(%error, "the backup lock was lost");
                        return;
                    }
                    // A store hiccup: the lock lives on until its expiry; try again.
                    Err(error) => tracing::warn!(%error, "cannot renew the backup lock"),
                }
            }
        });
        RepoLock { state, heartbeat, dead_predecessor }
    }

    /// The run this lock was taken over from, if its process is known to be dead (it ran
    /// on this host): nothing it left can still be in use.
    pub fn dead_predecessor(&self) -> Option<&str> {
        self.dead_predecessor.as_deref()
    }

    /// Renew now and confirm the lock is still ours: called right before a commit.
    pub async fn check(&self) -> Result<(), LockError> {
        self.state.renew().await
    }

    /// Stop the heartbeat and remove the lock if it is still ours. Best effort: a lock
    /// left behind expires.
    pub async fn release(self) {
        self.heartbeat.abort();
        let guard = self.state.holder.lock().await;
        if self.state.lost.load(Ordering::Relaxed) {
            return;
        }
        if let Err(error) = self.state.store.delete_if(&self.state.key, &guard.1).await {
            tracing::warn!(%error, "cannot remove the backup lock; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
        Arc::new(FsStore::new(dir.path()))
    }

    const KEY: &str = "ns/db/lock.json";

    async fn acquire(store: &Arc<dyn ObjectStore>, run: &str) -> Result<RepoLock, LockError> {
        RepoLock::acquire(Arc::clone(store), KEY.into(), "ns/db".into(), run, Duration::ZERO).await
    }

    #[tokio::test]
    async fn a_second_run_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        let first = acquire(&store, "first").await.expect("first lock");
        let refused = acquire(&store, "second").await.expect_err("second run refused");
        assert!(matches!(&refused, LockError::Held { holder, .. } if holder.run_id == "first"), "{refused}");
        first.check().await.expect("still held");
        first.release().await;
        acquire(&store, "second").await.expect("free again").release().await;
    }

    #[tokio::test]
    async fn stale_locks_are_taken_over_and_their_holder_learns_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        let old = acquire(&store, "old").await.expect("lock");
        // The holder stopped renewing (its process still runs): the stored expiry passed.
        {
            let mut guard = old.state.holder.lock().await;
            let expired = Holder { expires_at: Utc::now() - chrono::Duration::seconds(1), ..guard.0.clone() };
            let precondition = Precondition::Matches(guard.1.clone());
            guard.1 = store.put_if(KEY, encode(&expired), precondition).await.expect("put").expect("still ours");
        }
        let new = acquire(&store, "new").await.expect("takeover");
        assert!(matches!(old.check().await, Err(LockError::Lost { .. })));
        new.check().await.expect("the new holder keeps it");
        old.release().await;
        assert!(
            matches!(acquire(&store, "third").await, Err(LockError::Held { .. })),
            "the old holder removed nothing"
        );
        new.release().await;
    }

    #[tokio::test]
    async fn a_lock_of_a_dead_process_on_this_host_is_stale_at_once() {
        let now = Utc::now();
        let holder = Holder {
            run_id: "gone".into(),
            host: "here".into(),
            pid: u32::MAX,
            acquired_at: now,
            expires_at: now + LOCK_TTL,
        };
        assert!(holder.is_stale(now, "here"));
        assert!(!holder.is_stale(now, "elsewhere"));
        assert!(!Holder { pid: std::process::id(), ..holder.clone() }.is_stale(now, "here"));
    }
}
