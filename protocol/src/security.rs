//! zenoh transport security both binaries share: mutual TLS settings and the access-control
//! policy in which each edge node may publish only under its own checkpoint's prefix.
//!
//! Identity is the certificate: an edge node's client certificate carries its checkpoint id
//! as the subject common name (`scripts/certs.sh` issues them), and the aggregator's policy
//! is generated from its checkpoint registry, one subject per checkpoint. Rendered as JSON
//! (valid JSON5) for `zenoh::Config::from_json5`, so this crate need not depend on zenoh.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::ids::DeviceId;
use crate::keys;

/// `[zenoh.tls]` of either binary: one CA, and this side's certificate and key, used both to
/// listen and to connect. TLS is always mutual: each side proves itself to the other.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate (PEM) that signed every certificate of the deployment.
    pub ca: PathBuf,
    /// This side's certificate (PEM). An edge node's common name is its checkpoint id.
    pub cert: PathBuf,
    /// This side's private key (PEM, PKCS#8 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `scripts/certs.sh` writes into `dir` for common name `cn`: `ca.pem`,
    /// `<cn>.pem`, `<cn>.key`.
    pub fn in_folder(dir: &std::path::Path, cn: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{cn}.pem")),
            key: dir.join(format!("{cn}.key")),
        }
    }

    /// Every problem with the files and endpoints, each naming the field and the fix.
    pub fn check(&self, endpoints: &[String]) -> Vec<String> {
        let mut errors = Vec::new();
        for (field, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            match std::fs::read_to_string(path) {
                Ok(text) if text.contains("-----BEGIN ") => {}
                Ok(_) => errors.push(format!(
                    "zenoh.tls.{field}: '{}' is not a PEM file; issue the certificates with scripts/certs.sh",
                    path.display()
                )),
                Err(e) => errors.push(format!(
                    "zenoh.tls.{field}: cannot read '{}': {e}; issue the certificates with scripts/certs.sh",
                    path.display()
                )),
            }
        }
        for ep in endpoints {
            if !ep.starts_with("tls/") {
                errors.push(format!(
                    "zenoh endpoint '{ep}' is not TLS while [zenoh.tls] is set; write it tls/<host>:<port>"
                ));
            }
        }
        errors
    }
}

/// Without TLS zenoh has no access control: anyone who reaches an endpoint may read plates
/// and trajectories, publish events, or pose as an aggregator and acknowledge what it never
/// stored. Plain endpoints are therefore refused unless every one is on this machine
/// (loopback) or the config says `insecure = true`; multicast scouting (which finds and
/// joins peers on the LAN) counts as a network endpoint. Each problem names the fix.
pub fn plain_transport_problems(endpoints: &[String], multicast_scouting: bool) -> Vec<String> {
    let mut errors: Vec<String> = endpoints
        .iter()
        .filter(|ep| !is_loopback_endpoint(ep))
        .map(|ep| format!(
            "zenoh endpoint '{ep}' is plain (no TLS) on a network address: anyone who reaches it can read plates and publish or acknowledge events; set [zenoh] tls = {{ ca, cert, key }} (scripts/certs.sh issues them) and write it tls/<host>:<port>, or set [zenoh] insecure = true to run without access control on a network you trust"
        ))
        .collect();
    if multicast_scouting {
        errors.push("zenoh.multicast_scouting = true without TLS joins any peer on the LAN; set [zenoh] tls, or insecure = true".into());
    }
    errors
}

/// Whether a zenoh endpoint (`proto/host:port[#...]`) is on this machine.
pub fn is_loopback_endpoint(ep: &str) -> bool {
    let Some((_, addr)) = ep.split_once('/') else {
        return false;
    };
    let addr = addr.split(['#', '?']).next().unwrap_or(addr);
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every message type zenoh's access control knows.
const ALL_MESSAGES: [&str; 9] = [
    "put",
    "delete",
    "declare_subscriber",
    "query",
    "declare_queryable",
    "reply",
    "liveliness_token",
    "declare_liveliness_subscriber",
    "liveliness_query",
];

/// The access-control policy of an aggregator that edge nodes connect to. Default deny.
///
/// - Each checkpoint's node (certificate common name = checkpoint id) may send anything
///   under `ckpt/<city>/<county>/<checkpoint>/**` (events, evidence, health, liveliness,
///   its ack subscription), subscribe to and ask for its county's watch list, and look for
///   aggregators' liveliness tokens. Anything else it sends (a put under another
///   checkpoint's prefix above all) is dropped at the aggregator's ingress.
/// - Whatever the aggregator sends to a node (acknowledgements, watch lists, its
///   subscriptions and liveliness token) passes.
/// - `trusted` common names (other aggregators, operators' tools) may send and receive
///   anything.
pub fn checkpoint_acl(checkpoints: &[DeviceId], trusted: &[String]) -> Value {
    let mut rules = vec![
        json!({"id": "aggregator_alive", "permission": "allow", "flows": ["ingress"],
               "messages": ["declare_liveliness_subscriber", "liveliness_query"],
               "key_exprs": [keys::ANY_AGGREGATOR_ALIVE]}),
        json!({"id": "to_nodes", "permission": "allow", "flows": ["egress"],
               "messages": ALL_MESSAGES, "key_exprs": ["**"]}),
    ];
    let mut subjects = Vec::new();
    let mut policies = Vec::new();
    for c in checkpoints {
        let own = format!("own_{c}");
        let wl = format!("watchlist_{c}");
        rules.push(
            json!({"id": own, "permission": "allow", "flows": ["ingress"],
            "messages": ALL_MESSAGES,
            "key_exprs": [format!("{}/**", keys::checkpoint_prefix(c))]}),
        );
        rules.push(
            json!({"id": wl, "permission": "allow", "flows": ["ingress"],
            "messages": ["declare_subscriber", "query"], "key_exprs": [keys::watchlist(c)]}),
        );
        let subject = format!("node_{c}");
        subjects.push(json!({"id": subject, "cert_common_names": [c.as_str()]}));
        policies.push(json!({"id": format!("policy_{c}"), "subjects": [subject],
            "rules": [own, wl, "aggregator_alive", "to_nodes"]}));
    }
    if !trusted.is_empty() {
        rules.push(json!({"id": "trusted_all", "permission": "allow",
            "flows": ["ingress", "egress"], "messages": ALL_MESSAGES, "key_exprs": ["**"]}));
        subjects.push(json!({"id": "trusted", "cert_common_names": trusted}));
        policies.push(
            json!({"id": "policy_trusted", "subjects": ["trusted"], "rules": ["trusted_all"]}),
        );
    }
    json!({
        "enabled": true,
        "default_permission": "deny",
        "rules": rules,
        "subjects": subjects,
        "policies": policies,
    })
}

/// The access-control policy of an edge node: it exchanges messages only with peers whose
/// certificate common name is in `aggregators` (the aggregators of its scope and the zenoh
/// routers between them), in both directions. Default deny: another certificate from the
/// same CA (another node's, stolen) that reaches this node, directly or by gossip, sees none
/// of its events and cannot acknowledge (free) its outbox, pose as an aggregator's
/// liveliness token, or push a watch list or signal phase.
pub fn trusted_peers_acl(aggregators: &[String]) -> Value {
    json!({
        "enabled": true,
        "default_permission": "deny",
        "rules": [{"id": "with_aggregators", "permission": "allow",
                   "flows": ["ingress", "egress"], "messages": ALL_MESSAGES,
                   "key_exprs": ["**"]}],
        "subjects": [{"id": "aggregators", "cert_common_names": aggregators}],
        "policies": [{"id": "policy_aggregators", "subjects": ["aggregators"],
                      "rules": ["with_aggregators"]}],
    })
}

/// zenoh session settings, with mutual TLS when `tls` is given and the access-control policy
/// when `acl` is, as the JSON zenoh reads.
pub fn zenoh_json5(
    mode: &str,
    connect: &[String],
    listen: &[String],
    multicast_scouting: bool,
    tls: Option<&TlsFiles>,
    acl: Option<Value>,
) -> String {
    let mut cfg = json!({
        "mode": mode,
        "connect": {"endpoints": connect},
        "listen": {"endpoints": listen},
        "scouting": {"multicast": {"enabled": multicast_scouting}, "gossip": {"enabled": true}},
    });
    if let Some(t) = tls {
        let p = |p: &Path| p.display().to_string();
        cfg["transport"] = json!({"link": {"tls": {
            "root_ca_certificate": p(&t.ca),
            "listen_certificate": p(&t.cert),
            "listen_private_key": p(&t.key),
            "connect_certificate": p(&t.cert),
            "connect_private_key": p(&t.key),
            "enable_mtls": true,
            "verify_name_on_connect": true,
        }}});
    }
    if let Some(a) = acl {
        cfg["access_control"] = a;
    }
    cfg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_has_one_subject_and_policy_per_checkpoint_plus_trusted() {
        let a = DeviceId::parse("32050500051210000001").unwrap();
        let b = DeviceId::parse("32050600051210000002").unwrap();
        let acl = checkpoint_acl(&[a.clone(), b], &["aggregator-city".into()]);
        assert_eq!(acl["default_permission"], "deny");
        assert_eq!(acl["subjects"].as_array().unwrap().len(), 3);
        assert_eq!(acl["policies"].as_array().unwrap().len(), 3);
        let own = acl["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == format!("own_{a}"))
            .unwrap();
        assert_eq!(
            own["key_exprs"][0],
            "ckpt/320500/320505/32050500051210000001/**"
        );
        assert_eq!(own["flows"][0], "ingress");
        assert_eq!(acl["subjects"][0]["cert_common_names"][0], a.as_str());
    }

    #[test]
    fn tls_check_names_missing_files_and_plain_endpoints() {
        let t = TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let errs = t.check(&["tcp/127.0.0.1:7447".into(), "tls/localhost:7447".into()]);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("zenoh.tls.ca") && errs[0].contains("scripts/certs.sh"));
        assert!(errs[3].contains("tcp/127.0.0.1:7447"));
    }

    #[test]
    fn rendered_config_carries_mtls_and_acl() {
        let t = TlsFiles {
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        let s = zenoh_json5(
            "peer",
            &["tls/localhost:1".into()],
            &[],
            false,
            Some(&t),
            Some(json!({"enabled": true})),
        );
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["transport"]["link"]["tls"]["enable_mtls"], true);
        assert_eq!(v["access_control"]["enabled"], true);
        assert_eq!(v["connect"]["endpoints"][0], "tls/localhost:1");
    }

    /// Issue 18, row 4 (first half): plain zenoh is refused off loopback.
    #[test]
    fn row4_plain_zenoh_is_refused_on_a_network_address() {
        for ep in [
            "tcp/127.0.0.1:7447",
            "tcp/localhost:7447",
            "tcp/[::1]:7447",
            "udp/127.0.0.5:1",
        ] {
            assert!(is_loopback_endpoint(ep), "{ep}");
        }
        let errs = plain_transport_problems(
            &[
                "tcp/127.0.0.1:7447".into(),
                "tcp/10.0.0.5:7447".into(),
                "tcp/0.0.0.0:7447".into(),
            ],
            false,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("10.0.0.5") && errs[0].contains("insecure = true"));
        assert_eq!(plain_transport_problems(&[], true).len(), 1);
        assert!(plain_transport_problems(&["tcp/127.0.0.1:1".into()], false).is_empty());
    }
}
