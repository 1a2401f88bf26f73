//! The vehicle registry and watch list (布控) as it travels: a versioned file of vehicle
//! records, loaded by edge nodes from disk and pushed down by aggregators over zenoh
//! (`ckpt/<city6>/<county6>/watchlist`). A higher version replaces a lower one, never the
//! other way round.

use serde::{Deserialize, Serialize};

use crate::plate::{self, Mode, PlateClass, PlateColor};

/// Largest registry payload accepted over the wire.
pub const MAX_REGISTRY_BYTES: usize = 64 * 1024 * 1024;

/// Watch-list statuses: what pixels cannot tell, the registry can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// 报废.
    Scrapped,
    Wanted,
    LicenceRevoked,
    InspectionOverdue,
    HitAndRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scrapped => "scrapped",
            Status::Wanted => "wanted",
            Status::LicenceRevoked => "licence_revoked",
            Status::InspectionOverdue => "inspection_overdue",
            Status::HitAndRun => "hit_and_run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleRecord {
    /// Plate text as GA 36 writes it, without the dot (normalised on load).
    pub plate: String,
    #[serde(default)]
    pub plate_class: Option<PlateClass>,
    #[serde(default)]
    pub plate_colour: Option<PlateColor>,
    /// GA 24.4 vehicle class, e.g. `K11` large bus, `H14` heavy tanker.
    #[serde(default)]
    pub vehicle_class: Option<String>,
    /// Use character: `B` road passenger transport, `E` tourist coach, `R` hazardous goods.
    #[serde(default)]
    pub use_character: Option<String>,
    #[serde(default)]
    pub status: Vec<Status>,
    /// Routes under 100 km and airport or rail shuttles: exempt from the 02:00-05:00 rule.
    #[serde(default)]
    pub short_route: bool,
}

impl VehicleRecord {
    /// Long-distance passenger vehicle: class K1x or K2x with use B or E.
    pub fn is_coach(&self) -> bool {
        let class_ok = self
            .vehicle_class
            .as_deref()
            .is_some_and(|c| c.starts_with("K1") || c.starts_with("K2"));
        let use_ok = matches!(self.use_character.as_deref(), Some("B" | "E"));
        class_ok && use_ok
    }

    /// Truck or tractor (H*, Q*) or hazardous-goods transport (use R).
    pub fn is_truck(&self) -> bool {
        self.vehicle_class
            .as_deref()
            .is_some_and(|c| c.starts_with('H') || c.starts_with('Q'))
            || self.is_hazardous()
    }

    /// Heavy goods vehicle (一货): heavy truck (GA 24.4 H1x) or heavy tractor (Q1x).
    pub fn is_heavy_truck(&self) -> bool {
        self.vehicle_class
            .as_deref()
            .is_some_and(|c| c.starts_with("H1") || c.starts_with("Q1"))
    }

    pub fn is_hazardous(&self) -> bool {
        self.use_character.as_deref() == Some("R") || self.vehicle_class.as_deref() == Some("H14")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Monotonic version; a node keeps the highest it has seen.
    pub version: u64,
    /// Who issued it (an aggregator id, a file name).
    #[serde(default)]
    pub issued_by: String,
    pub vehicles: Vec<VehicleRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry is not valid JSON: {0}")]
    Malformed(String),
    #[error("registry payload of {0} bytes exceeds the {MAX_REGISTRY_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("registry version must be at least 1")]
    Version,
    #[error("registry record {index}: plate '{plate}' fits no GA 36 grammar")]
    Plate { index: usize, plate: String },
    #[error("registry records {first} and {second} are both for plate '{plate}'")]
    Duplicate {
        first: usize,
        second: usize,
        plate: String,
    },
}

impl RegistryFile {
    /// Parses and checks a registry: every plate fits a grammar (lenient: custom plates
    /// exist) and appears once. Plates come back normalised.
    pub fn decode(bytes: &[u8]) -> Result<RegistryFile, RegistryError> {
        if bytes.len() > MAX_REGISTRY_BYTES {
            return Err(RegistryError::TooLarge(bytes.len()));
        }
        let mut f: RegistryFile =
            serde_json::from_slice(bytes).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        f.check()?;
        Ok(f)
    }

    pub fn check(&mut self) -> Result<(), RegistryError> {
        if self.version == 0 {
            return Err(RegistryError::Version);
        }
        let mut seen = std::collections::HashMap::new();
        for (index, r) in self.vehicles.iter_mut().enumerate() {
            let p = plate::parse(&r.plate, r.plate_colour, Mode::Lenient).map_err(|_| {
                RegistryError::Plate {
                    index,
                    plate: r.plate.clone(),
                }
            })?;
            r.plate = p.text;
            if let Some(first) = seen.insert(r.plate.clone(), index) {
                return Err(RegistryError::Duplicate {
                    first,
                    second: index,
                    plate: r.plate.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("registries serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(plate: &str) -> VehicleRecord {
        VehicleRecord {
            plate: plate.into(),
            plate_class: None,
            plate_colour: None,
            vehicle_class: Some("K11".into()),
            use_character: Some("B".into()),
            status: vec![],
            short_route: false,
        }
    }

    #[test]
    fn heavy_goods_vehicles_by_class() {
        let with = |class: &str, use_char: Option<&str>| VehicleRecord {
            vehicle_class: Some(class.into()),
            use_character: use_char.map(String::from),
            ..rec("苏E12345")
        };
        // GA 24.4: H1x heavy trucks, Q1x heavy tractors; medium (H2x) and light (H3x) not.
        assert!(with("H11", None).is_heavy_truck() && with("Q11", None).is_heavy_truck());
        assert!(!with("H21", None).is_heavy_truck() && !with("H31", None).is_heavy_truck());
        assert!(!with("K11", Some("B")).is_heavy_truck());
        assert!(with("H21", Some("R")).is_hazardous() && with("H14", None).is_hazardous());
    }

    #[test]
    fn decode_normalises_and_rejects_bad_files() {
        let f = RegistryFile {
            version: 2,
            issued_by: "t".into(),
            vehicles: vec![rec("苏e·12345")],
        };
        let d = RegistryFile::decode(&f.encode()).unwrap();
        assert_eq!(d.vehicles[0].plate, "苏E12345");
        assert!(d.vehicles[0].is_coach());
        let dup = RegistryFile {
            vehicles: vec![rec("苏E12345"), rec("苏E·12345")],
            ..f.clone()
        };
        assert!(matches!(
            RegistryFile::decode(&dup.encode()),
            Err(RegistryError::Duplicate {
                first: 0,
                second: 1,
                ..
            })
        ));
        let bad = RegistryFile {
            vehicles: vec![rec("XX")],
            ..f.clone()
        };
        assert!(matches!(
            RegistryFile::decode(&bad.encode()),
            Err(RegistryError::Plate { .. })
        ));
        assert!(RegistryFile::decode(b"{").is_err());
        let v0 = RegistryFile { version: 0, ..f };
        assert_eq!(
            RegistryFile::decode(&v0.encode()),
            Err(RegistryError::Version)
        );
    }
}
