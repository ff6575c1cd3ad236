//! `verify` names what is damaged and who needs it, `repair` makes the store whole, and a writer
//! never builds a snapshot on a damaged, wrong or vanished foundation.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{flip_byte, noise, pack_files, read_all, store};
use relive_store::{Error, Id, Store};

fn manifest(records: &[Id]) -> Vec<u8> {
    let ids: Vec<String> = records.iter().map(|id| id.to_hex()).collect();
    serde_json::to_vec(&serde_json::json!({ "records": ids })).unwrap()
}

fn kinds(problems: &[relive_store::Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.kind.as_str()).collect()
}

/// The first byte of blob data in a pack (after its 8-byte magic).
const DATA: u64 = 8;

#[test]
fn a_damaged_chunk_is_named_with_its_snapshots_and_repair_lets_the_next_put_write_it_again() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let data = noise(1, 4096); // one chunk, stored raw: the flip lands in it
    let first = store.put_record(b"a", &[&data]).unwrap();
    let s1 = store.commit(&manifest(&[first.id])).unwrap();
    let other = store.put_record(b"other", &[&noise(2, 100)]).unwrap();
    let s2 = store.commit(&manifest(&[other.id])).unwrap();
    drop(store);
    let pack = pack_files(&root)[0].clone();
    flip_byte(&pack, DATA + 10);

    // Deduplication spreads the damage: the same data again writes nothing new.
    let store = Store::open(&root).unwrap();
    let again = store.put_record(b"a2", &[&data]).unwrap();
    let s3 = store.commit(&manifest(&[again.id])).unwrap();
    drop(store);

    let store = Store::open(&root).unwrap();
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(kinds(&report.problems), ["corrupt-blob"], "{report:?}");
    let mut needers: Vec<&str> = report.problems[0]
        .needed_by
        .iter()
        .map(|(s, _)| s.as_str())
        .collect();
    needers.sort();
    let mut expected = vec![s1.to_hex(), s3.to_hex()];
    expected.sort();
    assert_eq!(needers, expected);
    drop(store);

    let repaired = Store::repair(&root, &mut |_, _| {}).unwrap();
    assert!(repaired.report.is_ok(), "{repaired:?}");
    assert_eq!(kinds(&repaired.report.notes), ["lost-blob"]);
    assert_eq!(repaired.report.notes[0].needed_by.len(), 2);
    assert!(!pack.exists() && root.join("damaged/packs").exists());

    let store = Store::open(&root).unwrap();
    assert_eq!(read_all(&store, &other.id).0, b"other"); // the pack's good blobs survived
    assert!(store.verify(&mut |_, _| {}).unwrap().is_ok());
    assert!(store.read_snapshot(&s2).is_ok());
    // The next snapshot holding the data writes it again, and the old ones load again.
    let healed = store.put_record(b"a3", &[&data]).unwrap();
    assert!(healed.new_bytes >= 4096);
    store.commit(&manifest(&[healed.id])).unwrap();
    assert_eq!(read_all(&store, &first.id).1, vec![data.clone()]);
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok() && report.notes.is_empty(), "{report:?}");
}

/// Rewrites the fingerprint cache with the ids of its entries rotated by one, and its
/// checksum recomputed: what a bug or a hand could do.
fn rotate_cache_ids(root: &Path) {
    let path = root.join("cache/fingerprints");
    let bytes = fs::read(&path).unwrap();
    let body = &bytes[..bytes.len() - 32];
    let (head, entries) = body.split_at(20);
    let mut ids: Vec<&[u8]> = entries.chunks(48).map(|e| &e[16..]).collect();
    assert!(ids.len() >= 2);
    ids.rotate_left(1);
    let mut out = head.to_vec();
    for (entry, id) in entries.chunks(48).zip(ids) {
        out.extend_from_slice(&entry[..16]);
        out.extend_from_slice(id);
    }
    let check = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&check);
    fs::write(&path, out).unwrap();
}

#[test]
fn a_wrong_fingerprint_cache_entry_is_never_used_and_verify_names_it() {
    for compressible in [false, true] {
        let (dir, store) = store(4096);
        let root = dir.path().join(".relive");
        let make = |seed: u64| {
            if compressible {
                let mut t = common::text(4096);
                t[0] = seed as u8;
                t
            } else {
                noise(seed, 4096)
            }
        };
        let (a, b) = (make(1), make(2));
        store.put_record(b"a", &[&a]).unwrap();
        let pb = store.put_record(b"b", &[&b]).unwrap();
        store.commit(&manifest(&[pb.id])).unwrap();
        drop(store);
        rotate_cache_ids(&root);

        let store = Store::open(&root).unwrap();
        let report = store.verify(&mut |_, _| {}).unwrap();
        assert_eq!(
            kinds(&report.problems),
            ["wrong-fingerprint", "wrong-fingerprint"]
        );
        assert_eq!(report.problems[0].path, root.join("cache/fingerprints"));
        // The next snapshot of `a` and `b` holds `a` and `b`, not each other.
        let put = store.put_record(b"a again", &[&a]).unwrap();
        assert_eq!(read_all(&store, &put.id).1, vec![a.clone()]);
        let put = store.put_record(b"b again", &[&b]).unwrap();
        assert_eq!(read_all(&store, &put.id).1, vec![b.clone()]);
        drop(store);
        // Nothing was committed: the wrong cache is still there.
        let repaired = Store::repair(&root, &mut |_, _| {}).unwrap();
        assert!(repaired.report.is_ok(), "{repaired:?}");
        assert!(!root.join("cache/fingerprints").exists());
    }
}

#[test]
fn a_writer_writes_again_what_was_in_packs_deleted_under_it() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let data = noise(7, 10_000);
    store.put_record(b"x", &[&data]).unwrap();
    store.flush().unwrap();
    for pack in pack_files(&root) {
        fs::remove_file(pack).unwrap();
    }
    // Same handle, same data: its index still lists the deleted pack.
    let put = store.put_record(b"x", &[&data]).unwrap();
    assert!(put.new_bytes >= 10_000, "{put:?}");
    let snap = store.commit(&manifest(&[put.id])).unwrap();
    let fresh = Store::open(&root).unwrap();
    assert_eq!(read_all(&fresh, &put.id).1, vec![data.clone()]);
    assert!(fresh.read_snapshot(&snap).is_ok());

    // Deleted between the put and the commit: the commit refuses, the next one rewrites.
    let put = store.put_record(b"y", &[&data]).unwrap();
    store.flush().unwrap();
    for pack in pack_files(&root) {
        fs::remove_file(pack).unwrap();
    }
    assert!(matches!(
        store.commit(&manifest(&[put.id])),
        Err(Error::PacksVanished { .. })
    ));
    let put = store.put_record(b"y", &[&data]).unwrap();
    store.commit(&manifest(&[put.id])).unwrap();
    let fresh = Store::open(&root).unwrap();
    assert_eq!(read_all(&fresh, &put.id).1, [data]);
}

#[test]
fn verify_while_others_commit_reports_nothing() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    drop(store);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for w in 0..3u64 {
            let (root, done) = (&root, &done);
            scope.spawn(move || {
                let mut i = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let store = Store::open(root).unwrap();
                    let put = store
                        .put_record(b"r", &[&noise(w * 1000 + i, 9000)])
                        .unwrap();
                    store.commit(&manifest(&[put.id])).unwrap();
                    i += 1;
                }
            });
        }
        for _ in 0..30 {
            let store = Store::open(&root).unwrap();
            let report = store.verify(&mut |_, _| {}).unwrap();
            assert!(report.is_ok(), "{report:?}");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn a_deleted_config_is_refused_and_rebuilt_by_repair() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let put = store.put_record(b"p", &[&noise(3, 10_000)]).unwrap();
    let snap = store.commit(&manifest(&[put.id])).unwrap();
    drop(store);
    fs::remove_file(root.join("config")).unwrap();

    assert!(matches!(
        Store::open(&root),
        Err(Error::ConfigMissing { .. })
    ));
    let err = Store::create(&root).unwrap_err();
    assert!(err.to_string().contains("relive repair"), "{err}");
    assert!(!root.join("config").exists());
    assert!(fs::read_dir(root.join("tmp")).unwrap().next().is_none());

    let check = Store::check(&root, &mut |_, _| {}).unwrap();
    assert_eq!(kinds(&check.problems), ["missing-config"]);
    let repaired = Store::repair(&root, &mut |_, _| {}).unwrap();
    assert!(repaired.report.is_ok(), "{repaired:?}");
    let store = Store::open(&root).unwrap();
    assert_eq!(store.chunk_size(), 4096); // read back from the records
    assert!(store.read_snapshot(&snap).is_ok());

    // A damaged config: moved aside and rebuilt.
    drop(store);
    fs::write(root.join("config"), b"{garbage").unwrap();
    assert_eq!(
        kinds(&Store::check(&root, &mut |_, _| {}).unwrap().problems),
        ["corrupt-config"]
    );
    assert!(Store::repair(&root, &mut |_, _| {}).unwrap().report.is_ok());
    assert_eq!(Store::open(&root).unwrap().chunk_size(), 4096);
    assert!(root.join("damaged/config").exists());

    // An empty directory is no store: a new one may be made there.
    let empty = dir.path().join("empty");
    fs::create_dir_all(empty.join("snapshots")).unwrap();
    assert!(matches!(Store::open(&empty), Err(Error::NotFound { .. })));
    assert!(Store::create(&empty).is_ok());
}

#[test]
fn leftovers_in_tmp_are_noted_and_repair_removes_only_stale_ones() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let put = store.put_record(b"p", &[&noise(3, 100)]).unwrap();
    store.commit(&manifest(&[put.id])).unwrap();
    drop(store);
    let dead = root.join("tmp/pack-4194305-0123456789abcdef.tmp"); // above the largest pid_max
    let junk = root.join("tmp/junk");
    let live = root.join(format!(
        "tmp/pack-{}-0123456789abcdef.tmp",
        std::process::id()
    ));
    let young = root.join("tmp/pack-4194306-0123456789abcdef.tmp");
    for file in [&dead, &junk, &live, &young] {
        fs::write(file, b"half").unwrap();
    }
    let old = SystemTime::now() - Duration::from_secs(120);
    for file in [&dead, &junk, &live] {
        let f = fs::File::options().write(true).open(file).unwrap();
        f.set_modified(old).unwrap();
    }
    let report = Store::check(&root, &mut |_, _| {}).unwrap();
    assert!(report.is_ok());
    let noted: Vec<_> = report.notes.iter().map(|n| n.path.clone()).collect();
    if cfg!(target_os = "linux") {
        assert_eq!(noted, [junk.clone(), dead.clone()]);
    }
    Store::repair(&root, &mut |_, _| {}).unwrap();
    if cfg!(target_os = "linux") {
        assert!(!dead.exists() && !junk.exists());
    }
    assert!(live.exists() && young.exists());
}

#[test]
fn damaged_snapshots_and_runs_are_moved_aside() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let put = store.put_record(b"p", &[&noise(3, 100)]).unwrap();
    let good = store.commit(&manifest(&[put.id])).unwrap();
    store
        .put_run("good", br#"{"argv": ["s.py", "\udcff"]}"#)
        .unwrap();
    store.put_run("bad", b"{\"argv\": [").unwrap();
    drop(store);
    let garbage = root.join("snapshots").join("ab".repeat(32));
    fs::write(&garbage, b"garbage").unwrap();

    let report = Store::check(&root, &mut |_, _| {}).unwrap();
    assert_eq!(kinds(&report.problems), ["corrupt-snapshot", "corrupt-run"]);
    let repaired = Store::repair(&root, &mut |_, _| {}).unwrap();
    assert!(repaired.report.is_ok(), "{repaired:?}");
    assert_eq!(repaired.actions.len(), 2, "{:?}", repaired.actions);
    assert!(root
        .join("damaged/snapshots")
        .join("ab".repeat(32))
        .exists());
    assert!(root.join("damaged/runs/bad.json").exists());
    let store = Store::open(&root).unwrap();
    assert_eq!(store.snapshot_ids().unwrap(), [good]);
}
