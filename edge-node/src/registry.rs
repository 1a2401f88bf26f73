//! The vehicle registry and watch list at the edge: loaded from a file, updated by
//! aggregators over zenoh, persisted under the node's state folder so that it survives
//! restarts. Versions only go up: an older or equal version is ignored, a bad file or payload
//! is rejected with its reason and the version in force stays.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use protocol::registry::{RegistryError, RegistryFile, Status, VehicleRecord};
use serde::Deserialize;
use tracing::{info, warn};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// A registry file (JSON, see `protocol::registry::RegistryFile`) to load at start-up.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Folder where the version in force is kept across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Follow updates published by aggregators on this checkpoint's county watch-list key.
    #[serde(default = "yes")]
    pub follow_updates: bool,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".cache/state")
}
fn yes() -> bool {
    true
}

/// The registry in force.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub version: u64,
    pub issued_by: String,
    pub by_plate: HashMap<String, VehicleRecord>,
}

impl Registry {
    fn from_file(f: RegistryFile) -> Registry {
        Registry {
            version: f.version,
            issued_by: f.issued_by,
            by_plate: f
                .vehicles
                .into_iter()
                .map(|v| (v.plate.clone(), v))
                .collect(),
        }
    }

    /// Whether a registry is loaded at all (the not-registered rule needs one).
    pub fn is_loaded(&self) -> bool {
        self.version > 0
    }

    pub fn get(&self, plate: &str) -> Option<&VehicleRecord> {
        self.by_plate.get(plate)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new version is in force.
    Replaced { from: u64, to: u64 },
    /// Not newer than the version in force: ignored.
    Ignored { current: u64, offered: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryLoadError {
    #[error("registry file '{path}': {err}; fix the file (the version in force stays)")]
    File { path: PathBuf, err: String },
    #[error("cannot persist the registry to '{path}': {err}; check registry.state_dir")]
    Persist { path: PathBuf, err: std::io::Error },
}

/// The registry a node holds, shared by its cameras and its update subscriber.
pub struct RegistryStore {
    state_path: Option<PathBuf>,
    current: RwLock<Arc<Registry>>,
}

impl RegistryStore {
    /// An empty registry (no rules that need one will fire).
    pub fn empty() -> RegistryStore {
        RegistryStore {
            state_path: None,
            current: RwLock::new(Arc::new(Registry::default())),
        }
    }

    /// Opens the persisted registry of node `node_id` and the configured file, keeping the
    /// higher version. A bad configured file is an error only when nothing is in force.
    pub fn open(cfg: &RegistryConfig, node_id: &str) -> Result<RegistryStore, RegistryLoadError> {
        let state_path = cfg.state_dir.join(format!("registry-{node_id}.json"));
        let store = RegistryStore {
            state_path: Some(state_path.clone()),
            current: RwLock::new(Arc::new(Registry::default())),
        };
        match std::fs::read(&state_path) {
            Ok(bytes) => match RegistryFile::decode(&bytes) {
                Ok(f) => {
                    info!(version = f.version, path = %state_path.display(), "Registry restored");
                    *store.current.write().expect("not poisoned") =
                        Arc::new(Registry::from_file(f));
                }
                Err(e) => {
                    warn!(error = %e, path = %state_path.display(), "Persisted registry unreadable; ignored")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(error = %e, path = %state_path.display(), "Persisted registry unreadable; ignored")
            }
        }
        if let Some(path) = &cfg.file {
            match load_file(path) {
                Ok(f) => {
                    store.apply(f, &path.display().to_string())?;
                }
                Err(e) if store.current().is_loaded() => {
                    warn!(error = %e, version = store.current().version, "Registry file rejected; the persisted version stays in force");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(store)
    }

    pub fn current(&self) -> Arc<Registry> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Puts `f` in force if it is newer, persisting it first.
    pub fn apply(&self, f: RegistryFile, origin: &str) -> Result<Applied, RegistryLoadError> {
        let mut cur = self.current.write().expect("not poisoned");
        if f.version <= cur.version {
            info!(
                current = cur.version,
                offered = f.version,
                origin,
                "Registry update not newer; ignored"
            );
            return Ok(Applied::Ignored {
                current: cur.version,
                offered: f.version,
            });
        }
        if let Some(p) = &self.state_path {
            persist(p, &f.encode()).map_err(|err| RegistryLoadError::Persist {
                path: p.clone(),
                err,
            })?;
        }
        let from = cur.version;
        let to = f.version;
        let n = f.vehicles.len();
        *cur = Arc::new(Registry::from_file(f));
        info!(from, to, vehicles = n, origin, "Registry in force");
        Ok(Applied::Replaced { from, to })
    }

    /// Applies a payload received over the wire.
    pub fn apply_bytes(&self, bytes: &[u8], origin: &str) -> Result<Applied, RegistryLoadError> {
        let f = RegistryFile::decode(bytes).map_err(|e| RegistryLoadError::File {
            path: PathBuf::from(origin),
            err: e.to_string(),
        })?;
        self.apply(f, origin)
    }
}

/// Reads and checks a registry file.
pub fn load_file(path: &Path) -> Result<RegistryFile, RegistryLoadError> {
    let bytes = std::fs::read(path).map_err(|e| RegistryLoadError::File {
        path: path.to_path_buf(),
        err: e.to_string(),
    })?;
    RegistryFile::decode(&bytes).map_err(|e| RegistryLoadError::File {
        path: path.to_path_buf(),
        err: e.to_string(),
    })
}

/// Writes atomically: a temporary file, fsync, rename, fsync of the folder.
fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: u64, plates: &[&str]) -> RegistryFile {
        RegistryFile {
            version,
            issued_by: "test".into(),
            vehicles: plates
                .iter()
                .map(|p| VehicleRecord {
                    plate: p.to_string(),
                    plate_class: None,
                    plate_colour: None,
                    vehicle_class: None,
                    use_character: None,
                    status: vec![Status::Wanted],
                    short_route: false,
                })
                .collect(),
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn versions_only_go_up_and_survive_a_restart() {
        let dir = tmpdir("order");
        let cfg = RegistryConfig {
            file: None,
            state_dir: dir.clone(),
            follow_updates: true,
        };
        let s = RegistryStore::open(&cfg, "n1").unwrap();
        assert!(!s.current().is_loaded());
        assert_eq!(
            s.apply(file(3, &["苏E12345"]), "t").unwrap(),
            Applied::Replaced { from: 0, to: 3 }
        );
        // Older and equal versions never replace the one in force, whatever order they come in.
        assert_eq!(
            s.apply(file(2, &["苏E99999"]), "t").unwrap(),
            Applied::Ignored {
                current: 3,
                offered: 2
            }
        );
        assert!(matches!(
            s.apply(file(3, &[]), "t").unwrap(),
            Applied::Ignored { .. }
        ));
        assert!(s.current().get("苏E12345").is_some());
        // A bad payload is rejected and the version in force stays.
        assert!(s
            .apply_bytes(
                b"{\"version\": 9, \"vehicles\": [{\"plate\": \"??\"}]}",
                "t"
            )
            .is_err());
        assert_eq!(s.current().version, 3);
        drop(s);
        // Restart: version 3 comes back from disk; a configured older file does not replace it.
        let older = dir.join("older.json");
        std::fs::write(&older, file(1, &["苏A00001"]).encode()).unwrap();
        let cfg2 = RegistryConfig {
            file: Some(older),
            ..cfg.clone()
        };
        let s2 = RegistryStore::open(&cfg2, "n1").unwrap();
        assert_eq!(s2.current().version, 3);
        assert!(s2.current().get("苏E12345").is_some());
        // A broken configured file with a version in force: a warning, version 3 stays.
        let broken = dir.join("broken.json");
        std::fs::write(&broken, b"not json").unwrap();
        let s3 = RegistryStore::open(
            &RegistryConfig {
                file: Some(broken.clone()),
                ..cfg.clone()
            },
            "n1",
        )
        .unwrap();
        assert_eq!(s3.current().version, 3);
        // ...and with nothing in force (another node id), an error naming the file.
        let e = RegistryStore::open(
            &RegistryConfig {
                file: Some(broken),
                ..cfg
            },
            "n2",
        )
        .err()
        .expect("rejected");
        assert!(e.to_string().contains("broken.json"), "{e}");
    }
}
