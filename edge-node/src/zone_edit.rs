//! Zones drawn on the dashboard: the node answers the aggregators' zone queries
//! (`ckpt/.../<checkpoint>/<camera>/zones`). A query without a payload gets the zones the
//! camera runs with and the size of its latest frame; one with `{"zones": [...]}` asks the
//! node to save them. The node writes them into its own config file, in place of the
//! camera's `[[cameras.zones]]` and keeping every other line and comment, after checking
//! the whole new file as a restart would; the file watcher ([`crate::reload`]) then restarts
//! the camera with them. So the file stays the one truth of the node's settings, a change
//! survives a restart, and an edit that would break a rule (a crosswalk a rule names is
//! gone, a polygon crosses itself) is refused with every problem named, changing nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::{keys, DeviceId};
use serde_json::json;
use tracing::{info, warn};

use crate::config::{ConfigError, NodeConfig};
use crate::live::LiveFrames;
use crate::zones::{ZoneConfig, ZoneKind};

/// At most this many zones per camera and corners per zone.
pub const MAX_ZONES: usize = 64;
pub const MAX_CORNERS: usize = 64;

/// The zones of `camera` in the config text.
pub fn zones_in(text: &str, path: &Path, camera: &str) -> Result<Vec<ZoneConfig>, String> {
    let cfg = NodeConfig::from_toml(text, path).map_err(|e| e.to_string())?;
    cfg.cameras
        .iter()
        .find(|c| c.id == camera)
        .map(|c| c.zones.clone())
        .ok_or_else(|| format!("no camera {camera} in '{}'", path.display()))
}

/// The config text with `camera`'s zones replaced by `zones`, checked whole: Ok(new text,
/// zones before), or every problem found.
pub fn replace_zones(
    text: &str,
    path: &Path,
    camera: &str,
    zones: &[ZoneConfig],
) -> Result<(String, Vec<ZoneConfig>), Vec<String>> {
    if zones.len() > MAX_ZONES {
        return Err(vec![format!(
            "{} zones; a camera has at most {MAX_ZONES}",
            zones.len()
        )]);
    }
    if let Some(z) = zones.iter().find(|z| z.polygon.len() > MAX_CORNERS) {
        return Err(vec![format!(
            "zone '{}' has {} corners; at most {MAX_CORNERS}",
            z.name,
            z.polygon.len()
        )]);
    }
    let before = zones_in(text, path, camera).map_err(|e| vec![e])?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| vec![format!("'{}' is not TOML: {e}", path.display())])?;
    let cams = doc
        .get_mut("cameras")
        .and_then(|c| c.as_array_of_tables_mut())
        .ok_or_else(|| {
            vec![format!(
                "'{}' has no [[cameras]] tables to edit",
                path.display()
            )]
        })?;
    let cam = cams
        .iter_mut()
        .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(camera))
        .ok_or_else(|| vec![format!("no camera {camera} in '{}'", path.display())])?;
    let mut list = toml_edit::ArrayOfTables::new();
    for z in zones {
        let mut t = toml_edit::Table::new();
        t.insert("name", toml_edit::value(z.name.as_str()));
        t.insert("kind", toml_edit::value(kind_name(z.kind)));
        if let Some(l) = z.lane {
            t.insert("lane", toml_edit::value(l as i64));
        }
        let mut poly = toml_edit::Array::new();
        for [x, y] in &z.polygon {
            let round = |v: f32| ((v as f64) * 10_000.0).round() / 10_000.0;
            let mut p = toml_edit::Array::new();
            p.push(round(*x));
            p.push(round(*y));
            poly.push(p);
        }
        t.insert("polygon", toml_edit::value(poly));
        list.push(t);
    }
    cam.remove("zones");
    if !zones.is_empty() {
        cam.insert("zones", toml_edit::Item::ArrayOfTables(list));
    }
    let new_text = doc.to_string();
    match NodeConfig::from_toml(&new_text, path).and_then(|c| c.validate(path)) {
        Ok(_) => Ok((new_text, before)),
        Err(ConfigError::Invalid { errors, .. }) => Err(errors),
        Err(e) => Err(vec![e.to_string()]),
    }
}

fn kind_name(k: ZoneKind) -> &'static str {
    match k {
        ZoneKind::Crosswalk => "crosswalk",
        ZoneKind::WaitingArea => "waiting_area",
        ZoneKind::Lane => "lane",
        ZoneKind::Restricted => "restricted",
    }
}

/// Saves `zones` for `camera` in the config file (replaced whole by a rename, so the watcher
/// never reads half a file): the zones before and after, or the problems.
pub fn save_zones(
    file: &Path,
    camera: &str,
    zones: &[ZoneConfig],
) -> Result<(Vec<ZoneConfig>, Vec<ZoneConfig>), Vec<String>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![format!("cannot read '{}': {e}", file.display())])?;
    let (new_text, before) = replace_zones(&text, file, camera, zones)?;
    let tmp = file.with_extension("toml.zones-new");
    std::fs::write(&tmp, &new_text)
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| {
            vec![format!(
                "cannot write '{}': {e}; the node needs write access to its config file to save zones",
                file.display()
            )]
        })?;
    Ok((before, zones.to_vec()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveRequest {
    zones: Vec<ZoneConfig>,
    /// Who asked (for the node's log; the aggregator keeps the audit).
    #[serde(default)]
    actor: String,
}

/// Answers the aggregators' zone queries for the node's cameras at `checkpoint`.
pub async fn serve(
    session: &zenoh::Session,
    checkpoint: &DeviceId,
    frames: Arc<LiveFrames>,
    config_file: Option<PathBuf>,
) -> zenoh::Result<tokio::task::JoinHandle<()>> {
    let queryable = session
        .declare_queryable(keys::zones_of(checkpoint))
        .await?;
    Ok(tokio::spawn(async move {
        // One query at a time: two saves never interleave on the file.
        while let Ok(q) = queryable.recv_async().await {
            let key = q.key_expr().as_str().to_string();
            let camera = key.rsplit('/').nth(1).unwrap_or("").to_string();
            let Some(slot) = frames.get(&camera) else {
                let _ = q
                    .reply_err(format!("no camera {camera} on this node"))
                    .await;
                continue;
            };
            let payload = q.payload().map(|p| p.to_bytes().to_vec());
            let reply = match payload.filter(|p| !p.is_empty()) {
                None => {
                    let size = slot.frame_size();
                    Ok(json!({
                        "camera": camera,
                        "zones": slot.zones(),
                        "width": size.map(|s| s.0),
                        "height": size.map(|s| s.1),
                    }))
                }
                Some(body) => {
                    match (&config_file, serde_json::from_slice::<SaveRequest>(&body)) {
                        (None, _) => Err(
                            json!({"errors": ["this node was started without a config file (--config); zones cannot be saved"]}),
                        ),
                        (_, Err(e)) => Err(
                            json!({"errors": [format!("send {{\"zones\": [{{\"name\", \"kind\", \"polygon\", \"lane\"?}}]}}: {e}")]}),
                        ),
                        (Some(file), Ok(req)) => {
                            let (file, cam) = (file.clone(), camera.clone());
                            match tokio::task::spawn_blocking(move || {
                                save_zones(&file, &cam, &req.zones).map(|r| (r, req.actor))
                            })
                            .await
                            {
                                Ok(Ok(((before, after), actor))) => {
                                    info!(camera, actor, zones = after.len(), "Zones saved in the config file; the camera restarts with them");
                                    Ok(json!({"camera": camera, "before": before, "after": after}))
                                }
                                Ok(Err(errors)) => {
                                    warn!(camera, problems = errors.len(), "Zones refused");
                                    Err(json!({"errors": errors}))
                                }
                                Err(e) => Err(
                                    json!({"errors": [format!("saving the zones failed: {e}")]}),
                                ),
                            }
                        }
                    }
                }
            };
            let sent = match reply {
                Ok(v) => q.reply(key.as_str(), v.to_string()).await,
                Err(v) => q.reply_err(v.to_string()).await,
            };
            if let Err(e) = sent {
                warn!(camera, error = %e, "Zone reply not sent");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"

# The crossing camera.
[[cameras]]
id = "32050500051320000001"
name = "crossing"
source = { type = "file", path = "a.avi" }
[[cameras.zones]]
name = "crosswalk_a"
kind = "crosswalk"
polygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]

# The second camera.
[[cameras]]
id = "32050500051320000002"
name = "other"
source = { type = "file", path = "b.avi" }
"#;

    fn zone(name: &str, kind: ZoneKind, poly: &[[f32; 2]]) -> ZoneConfig {
        ZoneConfig {
            name: name.into(),
            kind,
            polygon: poly.to_vec(),
            lane: None,
        }
    }

    #[test]
    fn zones_are_replaced_in_place_and_comments_kept() {
        let p = Path::new("edge.toml");
        let new = [
            zone(
                "crosswalk_a",
                ZoneKind::Crosswalk,
                &[[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]],
            ),
            zone(
                "kerb_a",
                ZoneKind::WaitingArea,
                &[[0.0, 0.2], [0.2, 0.2], [0.2, 0.6], [0.123456, 0.6]],
            ),
        ];
        let (text, before) = replace_zones(FILE, p, "32050500051320000001", &new).unwrap();
        assert_eq!(before.len(), 1);
        assert!(text.contains("# The crossing camera.") && text.contains("# The second camera."));
        let after = zones_in(&text, p, "32050500051320000001").unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[1].polygon[3], [0.1235, 0.6], "rounded to 1/10000");
        assert!(zones_in(&text, p, "32050500051320000002")
            .unwrap()
            .is_empty());
        // Everything else as it was: the edited file plans only the camera's restart.
        let plan = crate::reload::plan(FILE, &text, p).unwrap().unwrap();
        assert_eq!(plan.changed.len(), 1);
        assert!(plan.added.is_empty() && plan.removed.is_empty());
    }

    #[test]
    fn a_bad_zone_is_refused_with_its_problems() {
        let p = Path::new("edge.toml");
        let bow_tie = zone(
            "crosswalk_a",
            ZoneKind::Crosswalk,
            &[[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]],
        );
        let errors = replace_zones(FILE, p, "32050500051320000001", &[bow_tie]).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("crosswalk_a")),
            "{errors:?}"
        );
        let outside = zone(
            "x",
            ZoneKind::Restricted,
            &[[0.1, 0.1], [1.5, 0.1], [0.5, 0.5]],
        );
        assert!(replace_zones(FILE, p, "32050500051320000001", &[outside]).is_err());
        let e = replace_zones(FILE, p, "32050500051320000009", &[]).unwrap_err();
        assert!(e[0].contains("no camera 32050500051320000009"), "{e:?}");
    }

    #[test]
    fn saving_writes_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("zones-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("edge.toml");
        std::fs::write(&f, FILE).unwrap();
        let (before, after) = save_zones(
            &f,
            "32050500051320000002",
            &[zone(
                "r",
                ZoneKind::Restricted,
                &[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
            )],
        )
        .unwrap();
        assert!(before.is_empty() && after.len() == 1);
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(zones_in(&text, &f, "32050500051320000002").unwrap(), after);
        assert_eq!(
            zones_in(&text, &f, "32050500051320000001").unwrap().len(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
