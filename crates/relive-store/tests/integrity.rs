//! Damage and crashes: every read verifies, nothing panics, verify finds everything.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::{flip_byte, noise, pack_files, read_all, store};
use relive_store::{Error, Store};

fn manifest(records: &[relive_store::Id]) -> Vec<u8> {
    let ids: Vec<String> = records.iter().map(|id| id.to_hex()).collect();
    serde_json::to_vec(&serde_json::json!({ "records": ids })).unwrap()
}

#[test]
fn a_flipped_byte_in_a_chunk_is_reported_by_id_and_path() {
    let (dir, store) = store(4096);
    let data = noise(1, 4096); // one incompressible chunk, stored raw right after the header
    let put = store.put_record(b"p", &[&data]).unwrap();
    store.commit(&manifest(&[put.id])).unwrap();
    let chunk = store.get_record(&put.id).unwrap().buffers[0].chunks[0];
    let pack = pack_files(&dir.path().join(".relive")).pop().unwrap();
    flip_byte(&pack, 8 + 100);

    let record = store.get_record(&put.id).unwrap(); // the record itself is intact
    let mut out = vec![0u8; 4096];
    match store.read_buffer_into(&record.buffers[0], &mut out) {
        Err(err @ Error::Corrupt { .. }) => {
            let Error::Corrupt {
                ref id, ref path, ..
            } = err
            else {
                unreachable!()
            };
            assert_eq!(id.as_deref(), Some(chunk.to_hex().as_str()));
            assert_eq!(path, &pack);
            let message = err.to_string();
            assert!(
                message.contains(&chunk.to_hex()) && message.contains(&*pack.to_string_lossy())
            );
        }
        other => panic!("{other:?}"),
    }

    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let problem = &report.problems[0];
    assert_eq!(
        (problem.kind.as_str(), problem.id.clone(), &problem.path),
        ("corrupt-blob", Some(chunk.to_hex()), &pack)
    );
}

#[test]
fn a_flipped_byte_in_a_record_is_reported() {
    let (dir, store) = store(4096);
    let put = store.put_record(&noise(2, 2000), &[]).unwrap();
    store.flush().unwrap();
    let pack = pack_files(&dir.path().join(".relive")).pop().unwrap();
    flip_byte(&pack, 8 + 500);
    match store.get_record(&put.id) {
        Err(Error::Corrupt { id, path, .. }) => {
            assert_eq!(id, Some(put.id.to_hex()));
            assert_eq!(path, pack);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_truncated_pack_is_skipped_on_open_and_reported() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let kept = store.put_record(b"kept", &[&noise(3, 10_000)]).unwrap();
    store.commit(&manifest(&[kept.id])).unwrap();
    let kept_pack = pack_files(&root);
    let lost = store.put_record(b"lost", &[&noise(4, 10_000)]).unwrap();
    let snap = store.commit(&manifest(&[lost.id])).unwrap();
    let lost_pack = pack_files(&root)
        .into_iter()
        .find(|p| !kept_pack.contains(p))
        .unwrap();
    drop(store);

    let len = fs::metadata(&lost_pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&lost_pack)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let store = Store::open(&root).unwrap();
    assert_eq!(read_all(&store, &kept.id).0, b"kept");
    assert!(matches!(
        store.get_record(&lost.id),
        Err(Error::MissingBlob { .. })
    ));

    let report = store.verify(&mut |_, _| {}).unwrap();
    let kinds: Vec<&str> = report.problems.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["corrupt-pack", "missing-blob"], "{report:?}");
    assert_eq!(report.problems[0].path, lost_pack);
    assert_eq!(report.problems[1].id, Some(lost.id.to_hex()));
    assert_eq!(
        report.problems[1].needed_by,
        [(snap.to_hex(), lost.id.to_hex())]
    );
}

#[test]
fn a_corrupted_snapshot_is_reported() {
    let (dir, store) = store(4096);
    let put = store.put_record(b"x", &[]).unwrap();
    let snap = store.commit(&manifest(&[put.id])).unwrap();
    let file = dir.path().join(".relive/snapshots").join(snap.to_hex());
    flip_byte(&file, 12);
    assert!(matches!(
        store.read_snapshot(&snap),
        Err(Error::Corrupt {
            what: "snapshot",
            ..
        })
    ));
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].kind, "corrupt-snapshot");
    assert_eq!(report.problems[0].path, file);
}

#[test]
fn half_written_tmp_files_are_ignored_and_stale_ones_removed() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let put = store.put_record(b"committed", &[&noise(5, 9000)]).unwrap();
    let snap = store.commit(&manifest(&[put.id])).unwrap();
    drop(store);

    // A crash mid-pack leaves a tmp pack; one from a dead process, one from a live one (ours).
    let mut half = b"RLVPACK\x01".to_vec();
    half.extend_from_slice(&noise(6, 5000));
    let dead = root.join("tmp/pack-4194305-0123456789abcdef.tmp"); // above the largest pid_max
    let alive = root.join(format!(
        "tmp/pack-{}-0123456789abcdef.tmp",
        std::process::id()
    ));
    let young_dead = root.join("tmp/pack-4194306-0123456789abcdef.tmp");
    for file in [&dead, &alive, &young_dead] {
        fs::write(file, &half).unwrap();
    }
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    for file in [&dead, &alive] {
        fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // And a junk file where packs go.
    fs::create_dir_all(root.join("packs/zz")).unwrap();
    fs::write(root.join("packs/zz/junk.pack"), b"junk").unwrap();

    let store = Store::open(&root).unwrap();
    assert_eq!(store.read_snapshot(&snap).unwrap(), manifest(&[put.id]));
    assert_eq!(read_all(&store, &put.id).0, b"committed");
    assert!(store.verify(&mut |_, _| {}).unwrap().is_ok());

    drop(store);
    let _store = Store::create(&root).unwrap();
    assert_eq!(dead.exists(), !cfg!(target_os = "linux"));
    assert!(alive.exists() && young_dead.exists());
}

#[test]
fn a_pack_renamed_or_replaced_by_garbage_is_skipped() {
    let (dir, store) = store(4096);
    let root = dir.path().join(".relive");
    let put = store.put_record(b"x", &[&noise(7, 100)]).unwrap();
    store.flush().unwrap();
    let pack = pack_files(&root).pop().unwrap();
    let wrong_name = pack.with_file_name(format!("{}.pack", "0".repeat(64)));
    fs::rename(
        &pack,
        pack.parent().unwrap().join(wrong_name.file_name().unwrap()),
    )
    .unwrap();
    drop(store);
    // Named for another index: skipped (it lives in the wrong prefix directory too).
    let store = Store::open(&root).unwrap();
    assert!(matches!(
        store.get_record(&put.id),
        Err(Error::MissingBlob { .. })
    ));

    let garbage = root.join(format!("packs/ab/ab{}.pack", "1".repeat(62)));
    fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    fs::write(&garbage, noise(8, 5000)).unwrap();
    let report = Store::open(&root).unwrap().verify(&mut |_, _| {}).unwrap();
    assert_eq!(
        report.problems.iter().filter(|p| p.path == garbage).count(),
        1,
        "{report:?}"
    );
}

#[test]
fn damage_anywhere_in_a_pack_never_panics() {
    let (dir, store) = store(512);
    let root = dir.path().join(".relive");
    let mut buffers = vec![noise(9, 3000), common::text(3000), vec![]];
    buffers.push(noise(10, 512));
    let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
    let put = store.put_record(&common::text(700), &refs).unwrap();
    store.commit(&manifest(&[put.id])).unwrap();
    drop(store);
    let pack = pack_files(&root).pop().unwrap();
    let original = fs::read(&pack).unwrap();
    let step = (original.len() / 200).max(1);
    for at in (0..original.len())
        .step_by(step)
        .chain(original.len() - 60..original.len())
    {
        let mut damaged = original.clone();
        damaged[at] ^= 0xff;
        fs::write(&pack, &damaged).unwrap();
        let store = Store::open(&root).unwrap();
        if let Ok(record) = store.get_record(&put.id) {
            for b in &record.buffers {
                let mut out = vec![0u8; b.len as usize];
                let _ = store.read_buffer_into(b, &mut out);
            }
        }
        let report = store.verify(&mut |_, _| {}).unwrap();
        assert!(!report.is_ok(), "damage at {at} went unnoticed");
    }
    // Truncation at every length.
    for len in (0..original.len()).step_by(step) {
        fs::write(&pack, &original[..len]).unwrap();
        let store = Store::open(&root).unwrap();
        assert!(store.get_record(&put.id).is_err());
        assert!(!store.verify(&mut |_, _| {}).unwrap().is_ok());
    }
}

#[test]
fn verify_reports_progress() {
    let (_dir, store) = store(1 << 16);
    for i in 0..3 {
        store.put_record(b"", &[&noise(i, 1 << 20)]).unwrap();
        store.flush().unwrap();
    }
    let mut calls = Vec::new();
    let report = store
        .verify(&mut |done, total| calls.push((done, total)))
        .unwrap();
    assert!(report.is_ok());
    let total = calls[0].1;
    assert_eq!(total, report.bytes);
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
}
