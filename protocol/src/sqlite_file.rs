//! An SQLite file's `PRAGMA user_version` read from its header, without opening it through
//! SQLite: no lock taken, no WAL or shared-memory file left behind whoever runs it. The edge
//! node's outbox and the aggregator's database keep their schema versions there, and their
//! `--check` commands read them this way before a rollback.

use std::io::Read;
use std::path::Path;

/// `user_version` of the SQLite file at `path` (bytes 60..64 of its 100-byte header; only
/// those 100 bytes are read). An empty file is version 0 (SQLite makes one so); a missing
/// file is the `NotFound` error; a file that is not SQLite is `InvalidData`.
pub fn user_version(path: &Path) -> std::io::Result<i64> {
    let mut b = Vec::with_capacity(100);
    std::fs::File::open(path)?.take(100).read_to_end(&mut b)?;
    if b.is_empty() {
        return Ok(0);
    }
    if b.len() < 100 || &b[..16] != b"SQLite format 3\0" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an SQLite file",
        ));
    }
    Ok(i32::from_be_bytes([b[60], b[61], b[62], b[63]]) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_header_and_names_what_is_not_sqlite() {
        let dir = std::env::temp_dir().join(format!("sqlite-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("v.db");
        let mut header = b"SQLite format 3\0".to_vec();
        header.resize(4096, 0);
        header[60..64].copy_from_slice(&7i32.to_be_bytes());
        std::fs::write(&db, &header).unwrap();
        assert_eq!(user_version(&db).unwrap(), 7);
        std::fs::write(&db, b"").unwrap();
        assert_eq!(user_version(&db).unwrap(), 0);
        std::fs::write(&db, b"not a database").unwrap();
        assert_eq!(
            user_version(&db).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        assert_eq!(
            user_version(&dir.join("none.db")).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
