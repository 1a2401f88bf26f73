//! Live reconfiguration: the node watches its config file and applies a changed one without
//! a restart. The new file is parsed and validated whole first; a bad one is refused with
//! every problem named and the running config stays. Cameras are compared by id: a camera
//! added starts, one removed stops, one whose table changed (zones, rules, thresholds,
//! source, plates) restarts with its new settings; the others run on untouched. Node-level
//! settings (ids, zenoh, outbox, runtime, metrics, registry) need a restart: a file that
//! changes them is refused as a whole. The watch list changes live through the aggregator
//! (see `registry`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{NodeConfig, ValidCamera, ValidConfig};

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What a changed config file asks for.
#[derive(Debug)]
pub struct Plan {
    pub config: ValidConfig,
    pub added: Vec<ValidCamera>,
    pub removed: Vec<String>,
    pub changed: Vec<ValidCamera>,
}

impl Plan {
    pub fn describe(&self) -> String {
        let ids = |v: &[ValidCamera]| {
            v.iter()
                .map(|c| c.label.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "added [{}], removed [{}], restarted with new settings [{}]",
            ids(&self.added),
            self.removed.join(", "),
            ids(&self.changed)
        )
    }
}

fn cameras_by_id(v: &toml::Value) -> BTreeMap<String, toml::Value> {
    v.get("cameras")
        .and_then(|c| c.as_array())
        .map(|cams| {
            cams.iter()
                .filter_map(|c| Some((c.get("id")?.as_str()?.to_string(), c.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares the running file's text with a new one; `Ok(None)` when nothing changed.
pub fn plan(old_text: &str, new_text: &str, path: &Path) -> Result<Option<Plan>, String> {
    if old_text == new_text {
        return Ok(None);
    }
    let config = NodeConfig::from_toml(new_text, path)
        .and_then(|c| c.validate(path))
        .map_err(|e| e.to_string())?;
    let old: toml::Value = toml::from_str(old_text).map_err(|e| e.to_string())?;
    let new: toml::Value = toml::from_str(new_text).map_err(|e| e.to_string())?;
    let (Some(o), Some(n)) = (old.as_table(), new.as_table()) else {
        return Err("the config is not a TOML table".into());
    };
    let mut fixed: Vec<&str> = o
        .keys()
        .chain(n.keys())
        .map(String::as_str)
        .filter(|k| *k != "cameras" && o.get(*k) != n.get(*k))
        .collect();
    fixed.sort();
    fixed.dedup();
    if !fixed.is_empty() {
        return Err(format!(
            "'{}' changes {} while the node runs; those take a restart, so nothing was applied (only [[cameras]] change live)",
            path.display(),
            fixed.join(", ")
        ));
    }
    let (before, after) = (cameras_by_id(&old), cameras_by_id(&new));
    let pick = |id: &String| {
        config
            .cameras
            .iter()
            .find(|c| c.id.as_str() == id)
            .cloned()
            .expect("validated cameras have ids")
    };
    let added = after
        .keys()
        .filter(|id| !before.contains_key(*id))
        .map(pick)
        .collect();
    let changed = after
        .iter()
        .filter(|(id, v)| before.get(*id).is_some_and(|b| b != *v))
        .map(|(id, _)| pick(id))
        .collect();
    let removed = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .cloned()
        .collect();
    Ok(Some(Plan {
        config,
        added,
        removed,
        changed,
    }))
}

/// The config file being watched: the text in force and the last text refused (not logged
/// again until it changes).
pub struct Watcher {
    path: PathBuf,
    in_force: String,
    refused: Option<String>,
    next: Instant,
}

impl Watcher {
    pub fn new(path: PathBuf, in_force: String) -> Watcher {
        Watcher {
            path,
            in_force,
            refused: None,
            next: Instant::now() + POLL,
        }
    }

    /// Looks at the file when due: a plan to apply, or the reason a new text was refused.
    pub fn poll(&mut self) -> Option<Result<Plan, String>> {
        if Instant::now() < self.next {
            return None;
        }
        self.next = Instant::now() + POLL;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            // Editors replace files by rename; a moment without one is not a change.
            Err(_) => return None,
        };
        if text == self.in_force || self.refused.as_deref() == Some(text.as_str()) {
            return None;
        }
        match plan(&self.in_force, &text, &self.path) {
            Ok(None) => None,
            Ok(Some(p)) => {
                self.in_force = text;
                self.refused = None;
                Some(Ok(p))
            }
            Err(e) => {
                self.refused = Some(text);
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"
[[cameras]]
id = "32050500051320000001"
name = "a"
source = { type = "file", path = "a.avi" }
[[cameras]]
id = "32050500051320000002"
name = "b"
source = { type = "file", path = "b.avi" }
"#;

    #[test]
    fn cameras_added_removed_and_changed_by_id() {
        let new = BASE.replace("b.avi", "b2.avi").replace(
            "[[cameras]]\nid = \"32050500051320000001\"\nname = \"a\"\nsource = { type = \"file\", path = \"a.avi\" }\n",
            "",
        ) + "[[cameras]]\nid = \"32050500051320000003\"\nname = \"c\"\nsource = { type = \"file\", path = \"c.avi\" }\n";
        let p = plan(BASE, &new, Path::new("n.toml")).unwrap().unwrap();
        assert_eq!(
            p.added.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(p.removed, ["32050500051320000001"]);
        assert_eq!(
            p.changed
                .iter()
                .map(|c| c.label.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert!(plan(BASE, BASE, Path::new("n.toml")).unwrap().is_none());
    }

    #[test]
    fn invalid_files_and_node_settings_are_refused_whole() {
        let bad = BASE.replace("32050500051320000002", "123");
        let e = plan(BASE, &bad, Path::new("n.toml")).unwrap_err();
        assert!(e.contains("n.toml") && e.contains("123"), "{e}");
        let node = BASE.replace("32050500055050000001", "32050500055050000009");
        let e = plan(BASE, &node, Path::new("n.toml")).unwrap_err();
        assert!(e.contains("node_id") && e.contains("restart"), "{e}");
        assert!(plan(BASE, "not toml [", Path::new("n.toml")).is_err());
    }
}
