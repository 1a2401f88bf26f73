//! Event decoding, as the aggregator does it for every zenoh sample: any bytes give an event
//! or an error, never a panic; a decoded event that validates survives encode + decode.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = protocol::Event::decode(data) {
        if ev.validate().is_ok() {
            let again = protocol::Event::decode(&ev.encode()).expect("an encoded event decodes");
            assert_eq!(again.event_id, ev.event_id);
        }
    }
    if let Ok(key) = std::str::from_utf8(data) {
        let _ = protocol::keys::parse_event_key(key);
        let _ = protocol::keys::parse_evidence_key(key);
    }
});
