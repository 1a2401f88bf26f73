//! The edge node's config, parsed and validated as `edge-node --config` does: any text gives
//! a config or an error listing its problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzz.toml");
    if let Ok(cfg) = edge_node::config::NodeConfig::from_toml(text, path) {
        let _ = cfg.validate(path);
    }
});
