//! The checkpoint registry: 20-digit id, name, coordinates, county region code, and the road
//! distance between checkpoints (configured per pair, or the great-circle distance times a
//! configured road factor). Correlation (cloned plates, trajectories) reads it.

use std::collections::HashMap;

use protocol::keys::Scope;
use protocol::{DeviceId, DeviceType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// 20-digit id, type code 121.
    pub id: String,
    pub name: String,
    /// WGS-84 longitude and latitude, degrees.
    pub lon: f64,
    pub lat: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoadDistanceConfig {
    pub from: String,
    pub to: String,
    /// Shortest road distance, kilometres (the same both ways).
    pub km: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Checkpoint {
    pub id: String,
    pub name: String,
    pub lon: f64,
    pub lat: f64,
    /// Six-digit county region code, from the id.
    pub county: String,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_id: HashMap<String, Checkpoint>,
    order: Vec<String>,
    road_km: HashMap<(String, String), f64>,
    road_factor: f64,
}

/// Great-circle distance in kilometres (haversine, mean Earth radius 6371.0088 km).
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().asin()
}

impl Registry {
    /// Builds the registry, appending every problem to `errors` (names both ends of a bad
    /// reference).
    pub fn build(
        cps: &[CheckpointConfig],
        roads: &[RoadDistanceConfig],
        road_factor: f64,
        scope: Option<&Scope>,
        errors: &mut Vec<String>,
    ) -> Registry {
        let mut r = Registry {
            road_factor,
            ..Default::default()
        };
        if !(1.0..=5.0).contains(&road_factor) {
            errors.push(format!("road_factor = {road_factor} must be between 1 and 5 (road distance over straight-line distance)"));
        }
        for (i, c) in cps.iter().enumerate() {
            let at = format!("checkpoints[{i}] '{}'", c.id);
            let id = match DeviceId::parse_as(&c.id, DeviceType::Checkpoint) {
                Ok(id) => id,
                Err(e) => {
                    errors.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if !(-180.0..=180.0).contains(&c.lon) || !(-90.0..=90.0).contains(&c.lat) {
                errors.push(format!(
                    "{at}: lon {} / lat {} out of range (degrees, lon -180..180, lat -90..90)",
                    c.lon, c.lat
                ));
            }
            if c.name.trim().is_empty() {
                errors.push(format!("{at}: name is empty"));
            }
            match scope {
                Some(Scope::County(code)) if id.county6() != code => errors.push(format!(
                    "{at}: in county {} but this aggregator's scope is county {code}",
                    id.county6()
                )),
                Some(Scope::City(code)) if id.city6() != *code => errors.push(format!(
                    "{at}: in city {} but this aggregator's scope is city {code}",
                    id.city6()
                )),
                _ => {}
            }
            if r.by_id.contains_key(&c.id) {
                errors.push(format!("{at}: listed twice"));
                continue;
            }
            r.order.push(c.id.clone());
            r.by_id.insert(
                c.id.clone(),
                Checkpoint {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    lon: c.lon,
                    lat: c.lat,
                    county: id.county6().to_string(),
                },
            );
        }
        let known = || r.order.join(", ");
        for (i, d) in roads.iter().enumerate() {
            for (end, id) in [("from", &d.from), ("to", &d.to)] {
                if !r.by_id.contains_key(id) {
                    errors.push(format!("unknown checkpoint '{id}' in road_distances[{i}].{end}; checkpoints defined: {}", known()));
                }
            }
            if !(d.km > 0.0 && d.km.is_finite()) {
                errors.push(format!("road_distances[{i}].km = {} must be above 0", d.km));
            }
            if d.from == d.to {
                errors.push(format!("road_distances[{i}] joins '{}' to itself", d.from));
            }
            r.road_km.insert(Self::pair(&d.from, &d.to), d.km);
        }
        r
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        if a <= b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        }
    }

    pub fn get(&self, id: &str) -> Option<&Checkpoint> {
        self.by_id.get(id)
    }

    /// Whether no checkpoint is configured.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Checkpoints in configured order.
    pub fn all(&self) -> Vec<&Checkpoint> {
        self.order.iter().map(|id| &self.by_id[id]).collect()
    }

    /// The checkpoints' device ids, in configured order (for access-control policies).
    pub fn device_ids(&self) -> Vec<protocol::DeviceId> {
        self.all()
            .iter()
            .filter_map(|c| protocol::DeviceId::parse(&c.id).ok())
            .collect()
    }

    /// Road distance between two checkpoints, km: configured, else great-circle distance
    /// times the road factor; None when either is unknown.
    pub fn distance_km(&self, a: &str, b: &str) -> Option<f64> {
        if a == b {
            return self.by_id.contains_key(a).then_some(0.0);
        }
        let (ca, cb) = (self.by_id.get(a)?, self.by_id.get(b)?);
        Some(match self.road_km.get(&Self::pair(a, b)) {
            Some(km) => *km,
            None => great_circle_km(ca.lat, ca.lon, cb.lat, cb.lon) * self.road_factor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(id: &str, lon: f64, lat: f64) -> CheckpointConfig {
        CheckpointConfig {
            id: id.into(),
            name: format!("cp {id}"),
            lon,
            lat,
        }
    }

    const A: &str = "32050500051210000001";
    const B: &str = "32050500051210000002";
    const C: &str = "32050600051210000003";

    #[test]
    fn great_circle_known_distances() {
        // Beijing (39.9042 N, 116.4074 E) to Shanghai (31.2304 N, 121.4737 E): about 1067 km.
        let d = great_circle_km(39.9042, 116.4074, 31.2304, 121.4737);
        assert!((d - 1067.0).abs() < 5.0, "{d}");
        assert!(great_circle_km(31.3, 120.6, 31.3, 120.6).abs() < 1e-9);
    }

    #[test]
    fn configured_distance_wins_both_ways_else_factor() {
        let mut e = Vec::new();
        let r = Registry::build(
            &[
                cp(A, 120.60, 31.30),
                cp(B, 120.70, 31.30),
                cp(C, 120.80, 31.40),
            ],
            &[RoadDistanceConfig {
                from: B.into(),
                to: A.into(),
                km: 14.5,
            }],
            1.3,
            None,
            &mut e,
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(r.distance_km(A, B), Some(14.5));
        assert_eq!(r.distance_km(B, A), Some(14.5));
        let straight = great_circle_km(31.30, 120.60, 31.40, 120.80);
        assert!((r.distance_km(A, C).unwrap() - straight * 1.3).abs() < 1e-9);
        assert_eq!(r.distance_km(A, "32050500051210000099"), None);
        assert_eq!(r.get(C).unwrap().county, "320506");
    }

    #[test]
    fn errors_name_both_ends_and_scope() {
        let mut e = Vec::new();
        Registry::build(
            &[
                cp(A, 120.6, 31.3),
                cp(A, 120.6, 31.3),
                cp(C, 200.0, 31.3),
                cp("123", 0.0, 0.0),
            ],
            &[RoadDistanceConfig {
                from: A.into(),
                to: "32050500051210000077".into(),
                km: -1.0,
            }],
            1.3,
            Some(&Scope::County("320505".into())),
            &mut e,
        );
        let all = e.join("\n");
        for needle in [
            "listed twice",
            "lon 200",
            "in county 320506 but this aggregator's scope is county 320505",
            "checkpoints[3] '123'",
            "unknown checkpoint '32050500051210000077' in road_distances[0].to; checkpoints defined: 32050500051210000001, 32050600051210000003",
            "km = -1 must be above 0",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }
}
