//! Snapshot manifest files: `b"RLVSNAP\x01"` then the manifest JSON, zstd-compressed. The file is
//! named by the BLAKE3 hash of its bytes. To the store the manifest is opaque except for
//! `"records"`: the ids of every record the snapshot needs.

use serde::Deserialize;

use crate::id::Id;

pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"RLVSNAP\x01";
const LEVEL: i32 = 3;

/// The bytes of a manifest file holding `json`.
pub(crate) fn encode(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.extend_from_slice(&zstd::bulk::compress(json, LEVEL)?);
    Ok(out)
}

/// The manifest JSON in a manifest file (whose hash the caller has checked).
pub(crate) fn decode(file_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let body = file_bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or("the file does not start like a snapshot manifest")?;
    zstd::stream::decode_all(body).map_err(|e| format!("cannot decompress the manifest: {e}"))
}

#[derive(Deserialize)]
struct Records {
    records: Vec<String>,
}

/// The record ids a manifest names.
pub(crate) fn record_ids(json: &[u8]) -> Result<Vec<Id>, String> {
    let doc: Records = serde_json::from_slice(json)
        .map_err(|e| format!("the manifest must be a JSON object with \"records\": [ids] ({e})"))?;
    doc.records
        .iter()
        .map(|hex| {
            Id::from_hex(hex).ok_or_else(|| format!("{hex:?} in \"records\" is not a blob id"))
        })
        .collect()
}
