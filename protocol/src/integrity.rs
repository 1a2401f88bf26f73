//! A payload's digest, sent beside it (a zenoh attachment) by whoever publishes it, so that
//! the receiver can tell a payload damaged on the way from one its sender made wrong.
//!
//! Why: under sustained back-pressure zenoh 1.10 can close a transport whose pushes waited
//! longer than `wait_before_close`, and the receiver then reads a damaged batch ("RX task
//! failed: decoding error"); seen once in the aggregator's load test on PostgreSQL with one
//! writer, where a 32 KiB evidence image arrived whole in length but not in content. The
//! aggregator refuses such an image as unreadable and acknowledges the refusal, so its node
//! would drop it: lost. With the digest the aggregator drops the damaged copy without an
//! acknowledgement, and the node sends it again from its outbox.

use sha2::Digest;

/// What a publisher attaches to a payload: `sha256:` and the payload's SHA-256 in hex.
pub fn attachment(payload: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(payload)))
}

/// Checks a payload against the attachment it came with: `Ok(true)` it matches, `Ok(false)`
/// there is none (a publisher of an earlier release, or a tool), `Err` with what was
/// expected when the payload is not what its publisher sent (or the attachment is not one
/// of ours).
pub fn check(payload: &[u8], attachment: Option<&[u8]>) -> Result<bool, String> {
    let Some(a) = attachment else {
        return Ok(false);
    };
    let Some(hex_digest) = a.strip_prefix(b"sha256:") else {
        return Err(format!(
            "an attachment that is not a digest ({} bytes)",
            a.len()
        ));
    };
    let sent = hex::decode(hex_digest).map_err(|_| "a digest that is not hex".to_string())?;
    let got = sha2::Sha256::digest(payload);
    if sent.as_slice() == got.as_slice() {
        Ok(true)
    } else {
        Err(format!(
            "payload of {} bytes does not match its sha256 {}",
            payload.len(),
            String::from_utf8_lossy(hex_digest)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_payload_is_told_from_a_whole_one() {
        let body = b"{\"event_id\":\"01K\"}".to_vec();
        let a = attachment(&body);
        assert_eq!(check(&body, Some(a.as_bytes())), Ok(true));
        assert_eq!(check(&body, None), Ok(false));
        let mut damaged = body.clone();
        damaged[3] ^= 0x20;
        assert!(check(&damaged, Some(a.as_bytes()))
            .unwrap_err()
            .contains("does not match"));
        assert!(check(&body, Some(b"crc:1")).is_err());
        assert!(check(&body, Some(b"sha256:zz")).is_err());
    }
}
