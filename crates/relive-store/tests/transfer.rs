//! `Store::copy_to` (relive push and pull): only what the destination lacks travels, a copy
//! loads whole at the other end, and damaged data is not copied.

mod common;

use common::{noise, pack_files, read_all, store};
use relive_store::{Error, Id, Store};

/// A store with two snapshots that share a buffer; returns (ids of the snapshots, of the records).
fn two_snapshots(src: &Store) -> (Vec<Id>, Vec<Id>) {
    let shared = noise(1, 200 << 10);
    let a = src
        .put_record(b"a", &[&shared, &noise(2, 50 << 10)])
        .unwrap()
        .id;
    let b = src.put_record(b"b", &[&shared]).unwrap().id;
    let s1 = src
        .commit(format!(r#"{{"records": ["{a}"]}}"#).as_bytes())
        .unwrap();
    let s2 = src
        .commit(format!(r#"{{"records": ["{a}", "{b}"]}}"#).as_bytes())
        .unwrap();
    src.put_run("run-1", b"{\"id\": \"run-1\"}").unwrap();
    (vec![s1, s2], vec![a, b])
}

#[test]
fn copies_everything_once_then_nothing() {
    let (_d1, src) = store(64 << 10);
    let (_d2, dst) = store(64 << 10);
    let (snapshots, records) = two_snapshots(&src);
    let first = src
        .copy_to(&dst, &snapshots, &["run-1".into()], &mut |_, _| {})
        .unwrap();
    assert_eq!(first.snapshots, 2);
    assert!(first.bytes > 250 << 10);
    let again = src
        .copy_to(&dst, &snapshots, &["run-1".into()], &mut |_, _| {})
        .unwrap();
    assert_eq!((again.snapshots, again.objects, again.bytes), (0, 0, 0));

    let reopened = Store::open(dst.path()).unwrap();
    assert_eq!(reopened.snapshot_ids().unwrap().len(), 2);
    for r in &records {
        assert_eq!(read_all(&reopened, r), read_all(&src, r));
    }
    assert_eq!(reopened.runs().unwrap().len(), 1);
    assert!(reopened.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn a_subset_brings_what_it_needs_and_the_rest_follows_alone() {
    let (_d1, src) = store(64 << 10);
    let (_d2, dst) = store(64 << 10);
    let (snapshots, records) = two_snapshots(&src);
    let first = src
        .copy_to(&dst, &snapshots[..1], &[], &mut |_, _| {})
        .unwrap();
    assert_eq!(first.snapshots, 1);
    let rest = src.copy_to(&dst, &snapshots, &[], &mut |_, _| {}).unwrap();
    assert_eq!(rest.snapshots, 1);
    // Only record b travelled: its chunks are the shared buffer's, already there.
    assert!(rest.bytes < 4 << 10, "{rest:?}");
    assert_eq!(read_all(&dst, &records[1]), read_all(&src, &records[1]));
}

#[test]
fn damaged_data_is_not_copied() {
    let (dir, src) = store(64 << 10);
    let (_d2, dst) = store(64 << 10);
    let (snapshots, _) = two_snapshots(&src);
    src.flush().unwrap();
    for pack in pack_files(&dir.path().join(".relive")) {
        common::flip_byte(&pack, 100);
    }
    let fresh = Store::open(&dir.path().join(".relive")).unwrap();
    let err = fresh
        .copy_to(&dst, &snapshots, &[], &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        dst.snapshot_ids().unwrap().is_empty(),
        "no manifest without its data"
    );
}
