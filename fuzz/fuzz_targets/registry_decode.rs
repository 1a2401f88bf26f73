//! The registry / watch-list file as a node or aggregator reads it (from disk or zenoh): any
//! bytes give a registry or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = protocol::registry::RegistryFile::decode(data);
});
