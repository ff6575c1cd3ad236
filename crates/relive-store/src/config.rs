//! The `config` file: format version and chunk size, fixed when the store is created.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Chunk sizes a store may declare (the pack index records lengths as u32).
const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=(1 << 30);

pub(crate) struct Config {
    pub(crate) chunk_size: usize,
}

/// Reads and checks `config`; `Error::NotFound` when there is none.
pub(crate) fn read(backend: &dyn Backend, supported: u64) -> Result<Config> {
    let root = PathBuf::from(backend.location());
    let path = backend.display("config");
    let Some(bytes) = backend.get("config")? else {
        return Err(Error::NotFound { path: root });
    };
    let corrupt = |detail: String| Error::Corrupt {
        what: "config",
        id: None,
        path: path.clone(),
        detail,
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON ({e})")))?;
    let format = value
        .get("format")
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupt("no integer \"format\"".into()))?;
    if format > supported {
        return Err(Error::FormatTooNew {
            path: root.to_path_buf(),
            found: format,
            supported,
        });
    }
    if format == 0 {
        return Err(corrupt("format 0 does not exist".into()));
    }
    let chunk_size = value
        .get("chunk_size")
        .and_then(Value::as_u64)
        .filter(|n| CHUNK_SIZE_RANGE.contains(n))
        .ok_or_else(|| {
            corrupt(format!(
                "\"chunk_size\" must be an integer in {}..={}",
                CHUNK_SIZE_RANGE.start(),
                CHUNK_SIZE_RANGE.end()
            ))
        })?;
    let chunk_size = usize::try_from(chunk_size).map_err(|_| {
        corrupt(format!(
            "chunk_size {chunk_size} is too large for this machine"
        ))
    })?;
    Ok(Config { chunk_size })
}

/// Writes a new `config` unless one exists (then that one stays: when two processes create the
/// same store at once, the first config wins and both use it).
pub(crate) fn write_new(backend: &dyn Backend, format: u64, chunk_size: usize) -> Result<()> {
    backend.create_once("config", &render(format, chunk_size))
}

/// What a store without `config` holds that a store would own (`"3 snapshots and 2
/// packs"`), or None when it holds none: then a new store may be created there.
pub(crate) fn held_data(backend: &dyn Backend) -> Option<String> {
    let snapshots = backend.list("snapshots/").map_or(0, |s| s.len());
    let packs = crate::pack::list_packs(backend).map_or(0, |p| p.len());
    (snapshots + packs > 0).then(|| format!("{snapshots} snapshot file(s) and {packs} pack(s)"))
}

/// The bytes of a new `config`.
pub(crate) fn render(format: u64, chunk_size: usize) -> Vec<u8> {
    let doc = json!({"format": format, "chunk_size": chunk_size, "created": rfc3339_now()});
    let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The current time as RFC 3339 UTC, to the second: `2026-11-27T19:34:00Z`.
pub(crate) fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
