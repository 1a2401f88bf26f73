//! 20-digit device and place ids (GB/T 28181 style):
//! `center(8) + industry(2) + type(3) + network(1) + sequence(6)`.
//!
//! The centre's first six digits are the GB/T 2260 region code (province, city, county); they
//! drive the county -> city hierarchy and the zenoh key space.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The device type codes this system knows (digits 11-13 of an id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// 121: video checkpoint (卡口).
    Checkpoint,
    /// 132: network camera (IPC).
    Camera,
    /// 200: centre signalling server.
    SignallingServer,
    /// 209: access gateway (接入网关): the JT/T 808 gateway vehicle terminals report to.
    AccessGateway,
    /// 503: video image database (the aggregator).
    ImageDatabase,
    /// 505: video analysis device (the edge node).
    AnalysisDevice,
}

impl DeviceType {
    pub fn code(self) -> &'static str {
        match self {
            DeviceType::Checkpoint => "121",
            DeviceType::Camera => "132",
            DeviceType::SignallingServer => "200",
            DeviceType::AccessGateway => "209",
            DeviceType::ImageDatabase => "503",
            DeviceType::AnalysisDevice => "505",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "121" => DeviceType::Checkpoint,
            "132" => DeviceType::Camera,
            "200" => DeviceType::SignallingServer,
            "209" => DeviceType::AccessGateway,
            "503" => DeviceType::ImageDatabase,
            "505" => DeviceType::AnalysisDevice,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device id '{0}' must be exactly 20 digits (centre 8, industry 2, type 3, network 1, sequence 6), e.g. 32050500051210000001")]
    Shape(String),
    #[error("device id '{id}' has unknown type code '{code}'; known: 121 checkpoint, 132 camera, 200 signalling server, 209 access gateway, 503 image database, 505 analysis device")]
    UnknownType { id: String, code: String },
    #[error("device id '{id}' is a {found:?}, expected a {expected:?} (type code {})", expected.code())]
    WrongType {
        id: String,
        found: DeviceType,
        expected: DeviceType,
    },
    #[error("device id '{0}' has a region code with province or city digits 00")]
    Region(String),
}

/// A validated 20-digit device id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(s: &str) -> Result<Self, DeviceIdError> {
        if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DeviceIdError::Shape(s.to_string()));
        }
        let code = &s[10..13];
        if DeviceType::from_code(code).is_none() {
            return Err(DeviceIdError::UnknownType {
                id: s.to_string(),
                code: code.to_string(),
            });
        }
        if &s[0..2] == "00" || &s[2..4] == "00" {
            return Err(DeviceIdError::Region(s.to_string()));
        }
        Ok(DeviceId(s.to_string()))
    }

    /// Parses and checks the type code in one step.
    pub fn parse_as(s: &str, expected: DeviceType) -> Result<Self, DeviceIdError> {
        let id = Self::parse(s)?;
        if id.device_type() != expected {
            return Err(DeviceIdError::WrongType {
                id: s.to_string(),
                found: id.device_type(),
                expected,
            });
        }
        Ok(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn device_type(&self) -> DeviceType {
        DeviceType::from_code(&self.0[10..13]).expect("validated at parse")
    }

    /// Six-digit county region code (province, city, county), e.g. `320505`.
    pub fn county6(&self) -> &str {
        &self.0[0..6]
    }

    /// Six-digit city region code: the county digits set to 00, e.g. `320500`.
    pub fn city6(&self) -> String {
        format!("{}00", &self.0[0..4])
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for DeviceId {
    type Error = DeviceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_standard_example() {
        let id = DeviceId::parse("32050500051210000001").unwrap();
        assert_eq!(id.device_type(), DeviceType::Checkpoint);
        assert_eq!(id.county6(), "320505");
        assert_eq!(id.city6(), "320500");
    }

    #[test]
    fn rejects_bad_shapes_and_types_with_the_input_quoted() {
        let e = DeviceId::parse("3205050005121000001")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'3205050005121000001'"), "{e}");
        let e = DeviceId::parse("32050500059990000001")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'999'"), "{e}");
        assert!(DeviceId::parse("3205050005121000000a").is_err());
        let e = DeviceId::parse_as("32050500051210000001", DeviceType::Camera).unwrap_err();
        assert!(matches!(e, DeviceIdError::WrongType { .. }));
    }

    #[test]
    fn serde_validates() {
        let ok: DeviceId = serde_json::from_str("\"32050500051320000001\"").unwrap();
        assert_eq!(ok.device_type(), DeviceType::Camera);
        assert!(serde_json::from_str::<DeviceId>("\"123\"").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = DeviceId::parse(&s);
        }

        #[test]
        fn valid_ids_round_trip(region in "[1-9][0-9]{3}[0-9]{2}", rest in "[0-9]{2}[0-9]{2}", ty in prop::sample::select(vec!["121","132","200","503","505"]), tail in "[0-9]{7}") {
            let s = format!("{region}{rest}{ty}{tail}");
            let id = DeviceId::parse(&s);
            if &s[2..4] == "00" { prop_assert!(id.is_err()); } else {
                let id = id.unwrap();
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(id.device_type().code(), ty);
            }
        }
    }
}
