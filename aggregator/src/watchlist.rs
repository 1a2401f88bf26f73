//! The vehicle registry and watch list an aggregator holds and pushes down: versioned, kept
//! on disk across restarts, published over zenoh to the watch-list key of every county in
//! scope (`ckpt/<city6>/<county6>/watchlist`) whenever a newer version arrives, and served
//! to nodes that ask (a queryable), so that a node started later gets the version in force.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use protocol::keys::Scope;
use protocol::registry::RegistryFile;
use serde::Deserialize;
use tracing::{info, warn};

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct WatchlistConfig {
    /// A registry file (JSON) to put in force at start-up when newer than the kept one.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Folder the version in force is kept in (default: beside the SQLite database, or
    /// `.cache/state`).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// County scope only: follow the city's watch list (the versions it publishes on this
    /// county's key, and the version in force when this aggregator starts) instead of
    /// keeping one of its own; edits here are refused and belong at the city.
    #[serde(default)]
    pub follow_upstream: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchlistError {
    #[error("watch list '{origin}' is not valid: {message}")]
    Invalid { origin: String, message: String },
    #[error("watch list version {offered} is not newer than version {current} in force")]
    NotNewer { current: u64, offered: u64 },
    #[error("cannot keep the watch list in '{path}': {err}")]
    Persist { path: PathBuf, err: std::io::Error },
}

pub struct Watchlist {
    state_path: PathBuf,
    current: RwLock<Option<Arc<RegistryFile>>>,
    /// The concrete keys a new version is published on (one per county in scope).
    pub publish_keys: Vec<String>,
    /// The key expression nodes' queries arrive on.
    pub query_key: String,
    /// Versions come from the city; local edits are refused.
    pub follows_upstream: bool,
}

impl Watchlist {
    /// The watch-list keys of a scope: counties come from the scope itself or from the
    /// checkpoints configured.
    pub fn keys(scope: &Scope, counties: &[String]) -> (Vec<String>, String) {
        let root = protocol::keys::ROOT;
        let key = |county: &str| format!("{root}/{}00/{county}/watchlist", &county[..4]);
        match scope {
            Scope::County(c) => (vec![key(c)], key(c)),
            Scope::City(c) => {
                let mut k: Vec<String> = counties
                    .iter()
                    .filter(|x| x.starts_with(&c[..4]))
                    .map(|x| key(x))
                    .collect();
                k.sort();
                k.dedup();
                (k, format!("{root}/{c}/*/watchlist"))
            }
            Scope::All => {
                let mut k: Vec<String> = counties.iter().map(|x| key(x)).collect();
                k.sort();
                k.dedup();
                (k, format!("{root}/*/*/watchlist"))
            }
        }
    }

    pub fn open(
        cfg: &WatchlistConfig,
        default_dir: &Path,
        aggregator_id: &str,
        scope: &Scope,
        counties: &[String],
    ) -> Result<Watchlist, WatchlistError> {
        let dir = cfg
            .state_dir
            .clone()
            .unwrap_or_else(|| default_dir.to_path_buf());
        let state_path = dir.join(format!("watchlist-{aggregator_id}.json"));
        let (publish_keys, query_key) = Self::keys(scope, counties);
        let wl = Watchlist {
            state_path,
            current: RwLock::new(None),
            publish_keys,
            query_key,
            follows_upstream: cfg.follow_upstream,
        };
        if let Ok(bytes) = std::fs::read(&wl.state_path) {
            match RegistryFile::decode(&bytes) {
                Ok(f) => {
                    info!(version = f.version, "Watch list restored");
                    *wl.current.write().expect("not poisoned") = Some(Arc::new(f));
                }
                Err(e) => {
                    warn!(path = %wl.state_path.display(), error = %e, "Kept watch list unreadable; ignored")
                }
            }
        }
        if let Some(path) = &cfg.file {
            let bytes = std::fs::read(path).map_err(|e| WatchlistError::Invalid {
                origin: path.display().to_string(),
                message: format!("{e}; fix watchlist.file"),
            })?;
            match wl.replace_bytes(&bytes, &path.display().to_string()) {
                Ok(_) | Err(WatchlistError::NotNewer { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(wl)
    }

    pub fn current(&self) -> Option<Arc<RegistryFile>> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Puts a newer version in force (kept on disk first); older or equal ones are refused.
    pub fn replace(
        &self,
        f: RegistryFile,
        origin: &str,
    ) -> Result<Arc<RegistryFile>, WatchlistError> {
        let mut cur = self.current.write().expect("not poisoned");
        let current = cur.as_ref().map(|c| c.version).unwrap_or(0);
        if f.version <= current {
            return Err(WatchlistError::NotNewer {
                current,
                offered: f.version,
            });
        }
        persist(&self.state_path, &f.encode()).map_err(|err| WatchlistError::Persist {
            path: self.state_path.clone(),
            err,
        })?;
        info!(
            from = current,
            to = f.version,
            vehicles = f.vehicles.len(),
            origin,
            "Watch list in force"
        );
        let f = Arc::new(f);
        *cur = Some(f.clone());
        Ok(f)
    }

    pub fn replace_bytes(
        &self,
        bytes: &[u8],
        origin: &str,
    ) -> Result<Arc<RegistryFile>, WatchlistError> {
        let f = RegistryFile::decode(bytes).map_err(|e| WatchlistError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        self.replace(f, origin)
    }
}

fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Aggregators side by side on one database keep one watch list: the version in force is
/// kept in the database too (`watchlists`, per scope), put there when this aggregator has a
/// newer one (an edit here, its file, its city) and taken from there when another has put a
/// newer one. Run every lease round (a third of `ha.lease_secs`) and after an edit. A version
/// taken from the database is not published again: the aggregator that put it in force
/// published it, and nodes that start later ask any of them.
pub fn share(wl: &Watchlist, scope: &str, store: &mut dyn crate::store::EventStore) {
    let current = wl.current();
    let mine = current.as_ref().map(|f| f.version).unwrap_or(0);
    match store.watchlist_get(scope) {
        Ok(Some((kept, body))) if kept > mine => {
            match wl.replace_bytes(&body, "the database (another aggregator of this scope)") {
                Ok(_) | Err(WatchlistError::NotNewer { .. }) => {}
                Err(e) => warn!(error = %e, "Watch list in the database not taken"),
            }
        }
        Ok(kept) if mine > kept.as_ref().map(|k| k.0).unwrap_or(0) => {
            let f = current.expect("a version above 0 is in force");
            if let Err(e) = store.watchlist_put(scope, mine, &f.encode(), protocol::time::now_ms())
            {
                warn!(error = %e, "Watch list not kept in the database; tried again next round");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "Watch list in the database not read; tried again next round"),
    }
}

/// Publishes the version in force on every county key of the scope.
pub async fn publish(session: &zenoh::Session, wl: &Watchlist) {
    let Some(f) = wl.current() else {
        return;
    };
    let bytes = f.encode();
    for key in &wl.publish_keys {
        match session.put(key, bytes.clone()).await {
            Ok(()) => info!(key, version = f.version, "Watch list published"),
            Err(e) => warn!(key, error = %e, "Watch list not published"),
        }
    }
}

/// A county that follows its city: every newer version the city publishes on this county's
/// key is put in force (and kept), and the version in force at the city is asked for now.
/// Older or equal versions (this aggregator's own publication among them) are ignored.
pub async fn follow(
    session: &zenoh::Session,
    wl: Arc<Watchlist>,
) -> zenoh::Result<zenoh::pubsub::Subscriber<()>> {
    let key = wl.query_key.clone();
    let apply = move |origin: &str, bytes: &[u8]| match wl.replace_bytes(bytes, origin) {
        Ok(f) => info!(
            version = f.version,
            origin, "Watch list followed from upstream"
        ),
        Err(WatchlistError::NotNewer { .. }) => {}
        Err(e) => {
            warn!(origin, error = %e, "Watch list from upstream refused; the version in force stays")
        }
    };
    let on_sample = apply.clone();
    let sub = session
        .declare_subscriber(&key)
        .callback(move |s| on_sample(s.key_expr().as_str(), &s.payload().to_bytes()))
        .await?;
    let replies = session
        .get(&key)
        .timeout(std::time::Duration::from_secs(2))
        .await?;
    while let Ok(r) = replies.recv_async().await {
        if let Ok(s) = r.result() {
            apply(s.key_expr().as_str(), &s.payload().to_bytes());
        }
    }
    Ok(sub)
}

/// Answers nodes asking for the watch list of their county with the version in force.
pub async fn serve(
    session: &zenoh::Session,
    wl: Arc<Watchlist>,
) -> zenoh::Result<zenoh::query::Queryable<()>> {
    session
        .declare_queryable(wl.query_key.clone())
        .callback(move |query| {
            use zenoh::Wait;
            if let Some(f) = wl.current() {
                let key = query.key_expr().clone();
                if let Err(e) = query.reply(key, f.encode()).wait() {
                    warn!(error = %e, "Watch-list query not answered");
                }
            }
        })
        .await
}
