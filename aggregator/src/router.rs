//! The zenoh routers between the levels (edge -> county router -> city router), with the
//! access-control policy generated from an aggregator's config: `aggregator router` prints a
//! router's config for `zenohd -c`, and the tests open a router from the same text.
//!
//! A county router admits its county's nodes (each may publish only under its own
//! checkpoint, as at the aggregator) and trusts, by certificate common name, the county's
//! aggregators, the other routers it links to and the city's aggregators; a city router's
//! config, made from the city aggregator's, trusts the county routers and the city's
//! aggregators. Mutual TLS always: a router carries plates between sites.

use protocol::security::{checkpoint_acl, zenoh_json5, TlsFiles};

use crate::config::ValidConfig;

/// One router: its endpoints, its certificate and whom it trusts beyond the nodes of the
/// aggregator config it is made from.
#[derive(Debug, Clone)]
pub struct RouterSpec {
    pub listen: Vec<String>,
    pub connect: Vec<String>,
    pub tls: TlsFiles,
    /// Certificate common names allowed everything: the aggregators of this level and the
    /// level above, the routers this one links to.
    pub trusted: Vec<String>,
}

/// The router's zenoh config (JSON): router mode, mutual TLS, no multicast scouting, and the
/// access-control policy for the checkpoints of `cfg` plus the trusted names (the
/// aggregator's own `zenoh.trusted_common_names` included).
pub fn config(cfg: &ValidConfig, spec: &RouterSpec) -> Result<String, String> {
    let problems = spec.tls.check(
        &spec
            .listen
            .iter()
            .chain(&spec.connect)
            .cloned()
            .collect::<Vec<_>>(),
    );
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let mut trusted = spec.trusted.clone();
    trusted.extend(cfg.raw.zenoh.trusted_common_names.iter().cloned());
    trusted.sort();
    trusted.dedup();
    if trusted.is_empty() {
        return Err(
            "a router trusts nobody: name the aggregators and the routers it links to (--trust)"
                .into(),
        );
    }
    let ids = cfg.checkpoints.device_ids();
    Ok(zenoh_json5(
        "router",
        &spec.connect,
        &spec.listen,
        false,
        Some(&spec.tls),
        Some(checkpoint_acl(&ids, &trusted)),
    ))
}
