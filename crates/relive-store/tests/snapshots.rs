//! Snapshots, run documents, and the store's layout on disk.

mod common;

use std::fs;
use std::path::Path;

use common::{noise, store};
use relive_store::{Error, Id, Store};

fn manifest(records: &[Id]) -> Vec<u8> {
    let ids: Vec<String> = records.iter().map(Id::to_hex).collect();
    serde_json::to_vec(&serde_json::json!({"records": ids, "frames": [], "time": 1.5})).unwrap()
}

#[test]
fn committed_snapshots_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/.relive");
    let store = Store::create(&path).unwrap();
    assert_eq!(store.chunk_size(), 1 << 20);
    let data = noise(1, 3 << 20);
    let put = store.put_record(b"state", &[&data]).unwrap();
    let json = manifest(&[put.id]);
    let snap = store.commit(&json).unwrap();
    assert_eq!(store.snapshot_ids().unwrap(), vec![snap]);
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.snapshot_ids().unwrap(), vec![snap]);
    assert_eq!(store.read_snapshot(&snap).unwrap(), json);
    let record = store.get_record(&put.id).unwrap();
    let mut out = vec![0u8; data.len()];
    store
        .read_buffer_into(&record.buffers[0], &mut out)
        .unwrap();
    assert_eq!(out, data);
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.packs, report.blobs, report.snapshots), (1, 4, 1));
}

#[test]
fn commit_rejects_unknown_records_and_bad_manifests() {
    let (_dir, store) = store(1024);
    let put = store.put_record(b"x", &[&noise(2, 3000)]).unwrap();
    let chunk = store.get_record(&put.id).unwrap().buffers[0].chunks[0];
    for bad in [
        manifest(&[put.id, Id::of(b"never stored")]),
        manifest(&[chunk]),
        b"{\"frames\": []}".to_vec(),
        b"{\"records\": [\"abc\"]}".to_vec(),
        b"not json".to_vec(),
    ] {
        assert!(
            matches!(store.commit(&bad), Err(Error::Invalid(_))),
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }
    assert!(store.snapshot_ids().unwrap().is_empty());
    store.commit(&manifest(&[put.id])).unwrap();
    store.commit(&manifest(&[])).unwrap();
    assert_eq!(store.snapshot_ids().unwrap().len(), 2);
}

#[test]
fn runs_round_trip() {
    let (_dir, store) = store(1024);
    store.put_run("run-2_b", b"{\"b\": 1}").unwrap();
    store.put_run("run-1", b"{\"a\": 1}").unwrap();
    store.put_run("run-1", b"{\"a\": 2}").unwrap();
    assert_eq!(
        store.runs().unwrap(),
        vec![
            ("run-1".to_string(), b"{\"a\": 2}".to_vec()),
            ("run-2_b".to_string(), b"{\"b\": 1}".to_vec())
        ]
    );
    for bad in ["", "../x", "a/b", "a.b", "a b", &"x".repeat(201)] {
        assert!(
            matches!(store.put_run(bad, b"{}"), Err(Error::Invalid(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn missing_store_and_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(&dir.path().join("nothing")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert!(err.to_string().contains("relive run"), "{err}");

    let path = dir.path().join("future");
    Store::create(&path).unwrap();
    fs::write(
        path.join("config"),
        br#"{"format": 2, "chunk_size": 1048576, "created": "x"}"#,
    )
    .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FormatTooNew {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade relive"), "{err}");
    assert!(matches!(
        Store::create(&path),
        Err(Error::FormatTooNew { .. })
    ));

    fs::write(path.join("config"), b"{").unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(Error::Corrupt { what: "config", .. })
    ));
}

#[test]
fn snapshot_ids_ignore_other_files() {
    let (dir, store) = store(1024);
    let snap = store.commit(&manifest(&[])).unwrap();
    let snapshots = dir.path().join(".relive/snapshots");
    fs::write(snapshots.join("README"), b"hi").unwrap();
    fs::write(snapshots.join(snap.to_hex().to_uppercase()), b"hi").unwrap();
    fs::write(snapshots.join(format!("{}.bak", snap.to_hex())), b"hi").unwrap();
    assert_eq!(store.snapshot_ids().unwrap(), vec![snap]);
}

#[cfg(unix)]
#[test]
fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = store(1024);
    let put = store.put_record(b"secret", &[&noise(3, 5000)]).unwrap();
    store.commit(&manifest(&[put.id])).unwrap();
    store.put_run("r", b"{}").unwrap();

    fn walk(path: &Path, seen: &mut usize) {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        *seen += 1;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            for entry in fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), seen);
            }
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    let mut seen = 0;
    walk(&dir.path().join(".relive"), &mut seen);
    assert!(seen >= 10, "{seen}");
}

#[test]
fn a_new_store_ignores_itself_in_git() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".relive");
    Store::create(&path).unwrap();
    assert_eq!(fs::read(path.join(".gitignore")).unwrap(), b"*\n");
    Store::create(&path).unwrap(); // opening it again keeps it
    assert_eq!(fs::read(path.join(".gitignore")).unwrap(), b"*\n");
}
