//! The backend conformance suite: every backend (a local directory; S3 on a real SeaweedFS
//! server) keeps the rules of `relive_store::backend`, and a whole store works on each.
//! As restic's backend tests do, one test per backend runs every case in order, each case on a
//! fresh empty store location.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use common::noise;
use common::seaweed::{Seaweed, BUCKET};
use relive_store::backend::{self, Backend};
use relive_store::Store;

type Case = (&'static str, fn(&dyn Backend));

const CASES: &[Case] = &[
    ("an object reads back whole", put_then_get),
    ("a missing object is none, not an error", missing_is_none),
    (
        "put_once of a name twice with the same bytes",
        put_once_twice,
    ),
    ("replace swaps the whole object", replace_swaps),
    (
        "create_once keeps the first object",
        create_once_keeps_first,
    ),
    ("ranged reads, and reads past the end fail", ranged_reads),
    ("list by prefix, with sizes, in name order", list_by_prefix),
    ("delete, and delete of a missing object", delete_objects),
    (
        "put_file publishes and removes the staged file",
        put_file_publishes,
    ),
    ("a large object (multipart on S3)", large_object),
    ("writers on several threads", concurrent_writers),
    (
        "a whole store: records, buffers, snapshots, runs, verify",
        whole_store,
    ),
];

/// Runs every case, each on a fresh location from `fresh`.
fn conformance(fresh: &dyn Fn(&str) -> Arc<dyn Backend>) {
    for (i, (name, case)) in CASES.iter().enumerate() {
        eprintln!("case {i}: {name}");
        let backend = fresh(&format!("case{i}"));
        case(backend.as_ref());
    }
}

#[test]
fn local_directory_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&|case| {
        Arc::new(backend::LocalDir::new(&dir.path().join(case))) as Arc<dyn Backend>
    });
}

#[test]
fn s3_on_seaweedfs_conforms() {
    let Some(server) = Seaweed::start() else {
        return;
    };
    server.export_credentials();
    let run = std::process::id();
    conformance(&|case| backend::for_location(&format!("s3://{BUCKET}/t{run}/{case}")).unwrap());
    // A store at the bucket's root works as one under a prefix.
    whole_store(
        backend::for_location(&format!("s3://{BUCKET}"))
            .unwrap()
            .as_ref(),
    );
    refused(&server);
}

/// What a user gets from a server that refuses: one line that says what failed.
fn refused(server: &Seaweed) {
    let no_bucket = backend::for_location("s3://no-such-bucket/x").unwrap();
    let e = no_bucket.get("config").unwrap_err().to_string();
    assert!(e.contains("no bucket \"no-such-bucket\""), "{e}");

    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong");
    let wrong = backend::for_location(&format!("s3://{BUCKET}/x")).unwrap();
    let e = wrong.get("config").unwrap_err().to_string();
    assert!(e.contains("refused the credentials"), "{e}");
    server.export_credentials();

    std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    let down = backend::for_location(&format!("s3://{BUCKET}/x")).unwrap();
    let e = down.get("config").unwrap_err().to_string();
    assert!(e.contains("unreachable at http://127.0.0.1:9"), "{e}");
    server.export_credentials();

    // A server that takes connections and never answers: bounded well below the client's
    // per-request time-out (60 s) and its retries.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::env::set_var(
        "AWS_ENDPOINT_URL",
        format!("http://{}", silent.local_addr().unwrap()),
    );
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let hung = backend::for_location(&format!("s3://{BUCKET}/x")).unwrap();
    let started = std::time::Instant::now();
    let e = hung.get("config").unwrap_err().to_string();
    assert!(e.contains("unreachable") && e.contains("timed out"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{e}"
    );
    server.export_credentials();

    std::env::set_var("AWS_ENDPOINT_URL", "http://192.0.2.1:8333");
    let e = backend::for_location(&format!("s3://{BUCKET}/x"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plain http") && e.contains("AWS_ALLOW_HTTP"),
        "{e}"
    );
    server.export_credentials();
}

fn put_then_get(b: &dyn Backend) {
    b.put_once("snapshots/a", b"hello").unwrap();
    assert_eq!(b.get("snapshots/a").unwrap().unwrap(), b"hello");
    b.put_once("empty", b"").unwrap();
    assert_eq!(b.get("empty").unwrap().unwrap(), b"");
    assert!(b.exists("snapshots/a").unwrap());
}

fn missing_is_none(b: &dyn Backend) {
    assert!(b.get("snapshots/none").unwrap().is_none());
    assert!(b.open("packs/00/none.pack", None).unwrap().is_none());
    assert!(!b.exists("snapshots/none").unwrap());
    assert!(b.list("snapshots/").unwrap().is_empty());
}

fn put_once_twice(b: &dyn Backend) {
    b.put_once("snapshots/x", b"same").unwrap();
    b.put_once("snapshots/x", b"same").unwrap();
    assert_eq!(b.get("snapshots/x").unwrap().unwrap(), b"same");
    assert_eq!(b.list("snapshots/").unwrap().len(), 1);
}

fn replace_swaps(b: &dyn Backend) {
    b.replace("runs/r.json", b"{\"v\": 1}").unwrap();
    b.replace("runs/r.json", b"{\"v\": 22}").unwrap();
    assert_eq!(b.get("runs/r.json").unwrap().unwrap(), b"{\"v\": 22}");
}

fn create_once_keeps_first(b: &dyn Backend) {
    b.create_once("config", b"first").unwrap();
    b.create_once("config", b"second").unwrap();
    assert_eq!(b.get("config").unwrap().unwrap(), b"first");
}

fn ranged_reads(b: &dyn Backend) {
    let bytes = noise(1, 100_000);
    b.put_once("packs/ab/r.pack", &bytes).unwrap();
    for len in [None, Some(100_000)] {
        let object = b.open("packs/ab/r.pack", len).unwrap().unwrap();
        assert_eq!(object.size().unwrap(), 100_000);
        let mut out = vec![0u8; 1000];
        object.read_at(5000, &mut out).unwrap();
        assert_eq!(out, bytes[5000..6000]);
        let mut tail = vec![0u8; 10];
        object.read_at(99_990, &mut tail).unwrap();
        assert_eq!(tail, bytes[99_990..]);
        let mut past = vec![0u8; 20];
        assert!(object.read_at(99_990, &mut past).is_err());
    }
}

fn list_by_prefix(b: &dyn Backend) {
    b.put_once("packs/ab/1.pack", b"one").unwrap();
    b.put_once("packs/cd/2.pack", b"two!").unwrap();
    b.put_once("packs/ab/0.pack", b"zero0").unwrap();
    b.put_once("snapshots/s", b"s").unwrap();
    b.put_once("snapshotsx", b"not under snapshots/").unwrap();
    assert_eq!(
        b.list("packs/").unwrap(),
        vec![
            ("packs/ab/0.pack".to_string(), 5),
            ("packs/ab/1.pack".to_string(), 3),
            ("packs/cd/2.pack".to_string(), 4)
        ]
    );
    assert_eq!(
        b.list("packs/cd/").unwrap(),
        vec![("packs/cd/2.pack".to_string(), 4)]
    );
    assert_eq!(
        b.list("snapshots/").unwrap(),
        vec![("snapshots/s".to_string(), 1)]
    );
    assert!(b.list("runs/").unwrap().is_empty());
}

fn delete_objects(b: &dyn Backend) {
    b.put_once("snapshots/d", b"d").unwrap();
    b.delete("snapshots/d").unwrap();
    assert!(b.get("snapshots/d").unwrap().is_none());
    assert!(!b.exists("snapshots/d").unwrap());
    b.delete("snapshots/d").unwrap();
    b.delete("snapshots/never").unwrap();
}

fn staged(b: &dyn Backend, bytes: &[u8]) -> std::path::PathBuf {
    let dir = b.staging_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("pack-{}-{}.tmp", std::process::id(), bytes.len()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

fn put_file_publishes(b: &dyn Backend) {
    let bytes = noise(2, 4096);
    let file = staged(b, &bytes);
    b.put_file("packs/ef/f.pack", &file).unwrap();
    assert!(!file.exists(), "the staged file is gone");
    assert_eq!(b.get("packs/ef/f.pack").unwrap().unwrap(), bytes);
}

fn large_object(b: &dyn Backend) {
    let bytes = noise(3, 40 << 20);
    let file = staged(b, &bytes);
    b.put_file("packs/12/big.pack", &file).unwrap();
    assert_eq!(
        b.list("packs/12/").unwrap(),
        vec![("packs/12/big.pack".to_string(), 40 << 20)]
    );
    let object = b.open("packs/12/big.pack", None).unwrap().unwrap();
    let mut out = vec![0u8; 1 << 20];
    object.read_at(33 << 20, &mut out).unwrap();
    assert_eq!(out, bytes[33 << 20..34 << 20]);
}

fn concurrent_writers(b: &dyn Backend) {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..5 {
                    b.put_once(&format!("snapshots/{t}-{i}"), &noise(t * 10 + i, 1000))
                        .unwrap();
                }
            });
        }
    });
    let listed = b.list("snapshots/").unwrap();
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|(_, len)| *len == 1000));
}

fn whole_store(b: &dyn Backend) {
    let backend: Arc<dyn Backend> = backend::for_location(b.location()).unwrap();
    let store = Store::create_on(Arc::clone(&backend), 64 << 10).unwrap();
    let buffer = noise(4, 300 << 10);
    let put = store.put_record(b"payload", &[&buffer]).unwrap();
    let manifest = format!(r#"{{"records": ["{}"]}}"#, put.id);
    let snapshot = store.commit(manifest.as_bytes()).unwrap();
    store.put_run("run-1", b"{\"id\": \"run-1\"}").unwrap();
    drop(store);

    // Another handle (another process, another machine) sees all of it.
    let again = Store::open(Path::new(b.location())).unwrap();
    assert_eq!(again.chunk_size(), 64 << 10);
    assert_eq!(again.snapshot_ids().unwrap(), vec![snapshot]);
    assert!(again.read_snapshot(&snapshot).unwrap().starts_with(b"{"));
    let record = again.get_record(&put.id).unwrap();
    assert_eq!(record.payload, b"payload");
    let mut out = vec![0u8; buffer.len()];
    again
        .read_buffer_into(&record.buffers[0], &mut out)
        .unwrap();
    assert_eq!(out, buffer);
    assert_eq!(
        again.runs().unwrap(),
        vec![("run-1".to_string(), b"{\"id\": \"run-1\"}".to_vec())]
    );
    // Unchanged data is not written again.
    assert_eq!(
        again.put_record(b"payload", &[&buffer]).unwrap().new_bytes,
        0
    );
    let report = again.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.snapshots, 1);
    assert!(report.blobs >= 6);
}
