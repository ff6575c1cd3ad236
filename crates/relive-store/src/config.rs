//! The `config` file: format version and chunk size, fixed when the store is created.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::durable;
use crate::error::{io_at, Error, Result};

/// Chunk sizes a store may declare (the pack index records lengths as u32).
const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=(1 << 30);

pub(crate) struct Config {
    pub(crate) chunk_size: usize,
}

/// Reads and checks `config`; `Error::NotFound` when there is none.
pub(crate) fn read(root: &Path, supported: u64) -> Result<Config> {
    let path = root.join("config");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: root.to_path_buf(),
            })
        }
        Err(e) => return Err(io_at(&path)(e)),
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
/// same store at once, the first config wins and both use it). The tmp file never outlives the
/// call, whatever fails (a full disk must not fill `tmp/` one attempt at a time).
pub(crate) fn write_new(root: &Path, format: u64, chunk_size: usize) -> Result<()> {
    let (file, tmp) = durable::create_tmp(&root.join("tmp"), "config")?;
    let result = durable::write_synced(file, &tmp, &render(format, chunk_size))
        .and_then(|()| link_new(&tmp, &root.join("config")));
    let _ = std::fs::remove_file(&tmp);
    result?;
    durable::sync_dir(root)
}

fn link_new(tmp: &Path, target: &Path) -> Result<()> {
    // A hard link creates `config` only if it is absent.
    match std::fs::hard_link(tmp, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // File systems without hard links: a rename, which may replace a racing config.
        Err(_) => std::fs::rename(tmp, target).map_err(io_at(target)),
    }
}

/// What a directory without `config` holds that a store would own (`"3 snapshots and 2
/// packs"`), or None when it holds none: then a new store may be created there.
pub(crate) fn held_data(root: &Path) -> Option<String> {
    let snapshots = std::fs::read_dir(root.join("snapshots"))
        .map(|entries| entries.flatten().count())
        .unwrap_or(0);
    let packs = crate::pack::list_packs(&root.join("packs")).map_or(0, |p| p.len());
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
