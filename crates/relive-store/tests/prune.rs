//! `Store::prune`: forgotten snapshots' packs go, in two phases that keep every snapshot a
//! writer commits meanwhile loadable.

mod common;

use std::time::Duration;

use common::{noise, pack_files, read_all, store};
use relive_store::{Id, Store};

const LATER: Duration = Duration::from_secs(3600);

fn snapshot_of(store: &Store, seed: u64) -> (Id, Id) {
    let record = store
        .put_record(b"x", &[&noise(seed, 300 << 10)])
        .unwrap()
        .id;
    let sid = store
        .commit(format!(r#"{{"records": ["{record}"]}}"#).as_bytes())
        .unwrap();
    (sid, record)
}

#[test]
fn forgotten_snapshots_packs_go_and_the_rest_loads() {
    let (dir, s) = store(64 << 10);
    let (old, _) = snapshot_of(&s, 1);
    let (kept, record) = snapshot_of(&s, 2);
    let root = dir.path().join(".relive");
    assert_eq!(pack_files(&root).len(), 2);

    let dry = s.prune(&[old], Duration::ZERO, true).unwrap();
    assert_eq!((dry.forgotten, dry.packs_deleted), (1, 1));
    assert_eq!(pack_files(&root).len(), 2, "a dry run deletes nothing");
    assert_eq!(s.snapshot_ids().unwrap().len(), 2);

    let report = s.prune(&[old], Duration::ZERO, false).unwrap();
    assert_eq!((report.forgotten, report.packs_deleted), (1, 1));
    assert!(report.bytes_freed > 300 << 10);
    assert_eq!(pack_files(&root).len(), 1);
    let reopened = Store::open(&root).unwrap();
    assert_eq!(reopened.snapshot_ids().unwrap(), vec![kept]);
    assert_eq!(read_all(&reopened, &record).1[0], noise(2, 300 << 10));
    assert!(reopened.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn a_first_prune_only_names_the_packs_and_writers_stop_counting_on_them() {
    let (dir, s) = store(64 << 10);
    let root = dir.path().join(".relive");
    let (old, _) = snapshot_of(&s, 1);
    snapshot_of(&s, 2);
    let first = s.prune(&[old], LATER, false).unwrap();
    assert_eq!((first.packs_deleted, first.packs_pending), (0, 1));
    assert_eq!(
        pack_files(&root).len(),
        2,
        "nothing deleted before the grace period"
    );

    // A writer that opens the store now writes the doomed data again rather than count on it
    // (with other new data: a pack holding exactly the doomed one's blobs would be that pack).
    let writer = Store::open(&root).unwrap();
    let other = writer.put_record(b"y", &[&noise(3, 100 << 10)]).unwrap();
    let put = writer.put_record(b"x", &[&noise(1, 300 << 10)]).unwrap();
    assert!(put.new_bytes > 300 << 10);
    let again = writer
        .commit(format!(r#"{{"records": ["{}", "{}"]}}"#, other.id, put.id).as_bytes())
        .unwrap();

    // Once the grace period is over, the doomed pack goes; the new snapshot loads.
    let second = Store::open(&root)
        .unwrap()
        .prune(&[], Duration::ZERO, false)
        .unwrap();
    assert_eq!(second.packs_deleted, 1, "{second:?}");
    let reopened = Store::open(&root).unwrap();
    assert!(reopened.snapshot_ids().unwrap().contains(&again));
    assert_eq!(read_all(&reopened, &put.id).1[0], noise(1, 300 << 10));
    assert!(reopened.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn a_pack_a_snapshot_came_to_need_during_the_grace_period_stays() {
    let (dir, s) = store(64 << 10);
    let root = dir.path().join(".relive");
    // This writer opened the store before the prune and never refreshes: it counts on the
    // pack the prune names.
    let writer = Store::open(&root).unwrap();
    let (old, _) = snapshot_of(&s, 1);
    writer.refresh().unwrap();
    s.prune(&[old], LATER, false).unwrap();
    let put = writer.put_record(b"x", &[&noise(1, 300 << 10)]).unwrap();
    assert_eq!(put.new_bytes, 0, "deduplicated against the doomed pack");
    let sid = writer
        .commit(format!(r#"{{"records": ["{}"]}}"#, put.id).as_bytes())
        .unwrap();

    let second = Store::open(&root)
        .unwrap()
        .prune(&[], Duration::ZERO, false)
        .unwrap();
    assert_eq!(second.packs_deleted, 0, "{second:?}");
    let reopened = Store::open(&root).unwrap();
    assert_eq!(reopened.snapshot_ids().unwrap(), vec![sid]);
    assert_eq!(read_all(&reopened, &put.id).1[0], noise(1, 300 << 10));
    assert!(reopened.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}
