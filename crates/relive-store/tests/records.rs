//! Storing and loading records: round trips, dedup, compression choices.

mod common;

use common::{noise, read_all, store, text};
use relive_store::{BufferSource, Codec, Kind, Store};

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn round_trip_of_several_buffers() {
    let (_dir, store) = store(1000);
    let buffers: Vec<Vec<u8>> = vec![
        vec![],
        vec![7],
        noise(1, 999),
        noise(2, 1000),
        noise(3, 1001),
        text(5500),
        vec![0; 3000],
    ];
    let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
    let put = store.put_record(b"the payload", &refs).unwrap();
    assert_eq!(
        put.raw_bytes,
        11 + buffers.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    assert!(put.new_bytes > 0);

    // Readable before the pack is sealed, and after.
    assert_eq!(
        read_all(&store, &put.id),
        (b"the payload".to_vec(), buffers.clone())
    );
    store.flush().unwrap();
    assert_eq!(
        read_all(&store, &put.id),
        (b"the payload".to_vec(), buffers.clone())
    );

    let record = store.get_record(&put.id).unwrap();
    let chunk_counts: Vec<usize> = record.buffers.iter().map(|b| b.chunks.len()).collect();
    assert_eq!(chunk_counts, [0, 1, 1, 1, 2, 6, 3]);

    let path = store.path().to_path_buf();
    drop(store);
    let reopened = Store::open(&path).unwrap();
    assert_eq!(
        read_all(&reopened, &put.id),
        (b"the payload".to_vec(), buffers)
    );
}

#[test]
fn payload_only_and_empty_records() {
    let (_dir, store) = store(1 << 20);
    let a = store.put_record(b"", &[]).unwrap();
    let b = store.put_record(b"x", &[]).unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(read_all(&store, &a.id), (vec![], vec![]));
    assert_eq!(read_all(&store, &b.id), (b"x".to_vec(), vec![]));
}

#[test]
fn identical_put_writes_nothing() {
    let (_dir, store) = store(4096);
    let data = noise(9, 100_000);
    let first = store.put_record(b"p", &[&data]).unwrap();
    let again = store.put_record(b"p", &[&data]).unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(again.new_bytes, 0);
    store.flush().unwrap();
    assert_eq!(store.put_record(b"p", &[&data]).unwrap().new_bytes, 0);

    // Same buffer, new payload: only the record is new.
    let other = store.put_record(b"q", &[&data]).unwrap();
    assert!(
        other.new_bytes > 0 && other.new_bytes < 4096,
        "{}",
        other.new_bytes
    );
}

#[test]
fn repeated_chunks_are_stored_once() {
    let (_dir, store) = store(4096);
    let zeros = vec![0u8; 4096 * 50];
    let put = store.put_record(b"", &[&zeros, &zeros]).unwrap();
    // One zero chunk (compressed to a few bytes) and the record.
    assert!(put.new_bytes < 4096, "{}", put.new_bytes);
    assert_eq!(read_all(&store, &put.id).1, vec![zeros.clone(), zeros]);
}

#[test]
fn partly_changed_buffer_writes_only_changed_chunks() {
    let (_dir, store) = store(1 << 20);
    let mut weights = noise(4, 64 << 20);
    let first = store.put_record(b"weights", &[&weights]).unwrap();
    assert!(first.new_bytes >= 64 << 20);
    // Change 1 MiB that straddles two chunks.
    for byte in &mut weights[(10 << 20) + (1 << 19)..(11 << 20) + (1 << 19)] {
        *byte = byte.wrapping_add(1);
    }
    let second = store.put_record(b"weights", &[&weights]).unwrap();
    let record_size = 5 + 12 + 64 * 32 + 7;
    assert_eq!(second.new_bytes, (2 << 20) + record_size as u64);
    assert_eq!(read_all(&store, &second.id).1[0], weights);
}

#[test]
fn compressible_data_is_compressed_and_noise_is_not() {
    let (_dir, store) = store(1 << 16);
    let compressible = text(1 << 16);
    let random = noise(5, 1 << 16);
    let put = store
        .put_record(&text(5000), &[&compressible, &random])
        .unwrap();
    store.flush().unwrap();
    let record = store.get_record(&put.id).unwrap();
    let text_chunk = store.blob_info(&record.buffers[0].chunks[0]).unwrap();
    let noise_chunk = store.blob_info(&record.buffers[1].chunks[0]).unwrap();
    let record_blob = store.blob_info(&put.id).unwrap();
    assert_eq!(
        (text_chunk.kind, text_chunk.codec),
        (Kind::Chunk, Codec::Zstd)
    );
    assert!(text_chunk.stored_len < 1000);
    assert_eq!(
        (
            noise_chunk.codec,
            noise_chunk.stored_len,
            noise_chunk.raw_len
        ),
        (Codec::Raw, 1 << 16, 1 << 16)
    );
    assert_eq!(
        (record_blob.kind, record_blob.codec),
        (Kind::Record, Codec::Zstd)
    );
    assert_eq!(read_all(&store, &put.id).1, vec![compressible, random]);
}

#[test]
fn the_raw_bytes_written_are_counted_before_compression_and_once() {
    let (_dir, store) = store(1 << 16);
    let compressible = text(4 << 16);
    let payload = text(5000);
    let put = store.put_record(&payload, &[&compressible]).unwrap();
    store.flush().unwrap();
    let record_len = store.blob_info(&put.id).unwrap().raw_len as u64;
    assert!(put.new_bytes < 10_000, "{}", put.new_bytes); // stored compressed
    assert_eq!(store.raw_bytes_written(), (4 << 16) + record_len);
    store.put_record(&payload, &[&compressible]).unwrap(); // stored already: nothing written
    assert_eq!(store.raw_bytes_written(), (4 << 16) + record_len);
}

#[test]
fn chunks_compressed_on_idle_cores_or_not_read_back_the_same() {
    let (_dir, store) = store(1 << 16);
    store.set_compress_when_idle(true); // the default: raw where no idle thread got to a chunk
    let (compressible, random) = (text(8 << 16), noise(9, 4 << 16));
    let put = store
        .put_record(b"idle", &[&compressible, &random])
        .unwrap();
    assert!(put.new_bytes <= (12 << 16) + 100, "{}", put.new_bytes);
    store.flush().unwrap();
    let record = store.get_record(&put.id).unwrap();
    for chunk in &record.buffers[1].chunks {
        assert_eq!(store.blob_info(chunk).unwrap().codec, Codec::Raw); // noise never pays
    }
    assert_eq!(read_all(&store, &put.id).1, vec![compressible, random]);
}

#[test]
fn large_chunks_are_judged_on_a_sample_before_compressing() {
    let (_dir, store) = store(1 << 20);
    let compressible = text(1 << 20);
    let random = noise(7, 1 << 20);
    // Compressible in its first half only: the sample's middle and start pieces see text.
    let mut half = text(1 << 20);
    half[1 << 19..].copy_from_slice(&noise(8, 1 << 19));
    let put = store
        .put_record(b"three", &[&compressible, &random, &half])
        .unwrap();
    store.flush().unwrap();
    let record = store.get_record(&put.id).unwrap();
    let codecs: Vec<Codec> = record
        .buffers
        .iter()
        .map(|b| store.blob_info(&b.chunks[0]).unwrap().codec)
        .collect();
    assert_eq!(codecs, vec![Codec::Zstd, Codec::Raw, Codec::Zstd]);
    assert_eq!(
        read_all(&store, &put.id).1,
        vec![compressible, random, half]
    );
}

#[test]
fn chunks_that_compress_a_little_are_kept_raw() {
    // Like trained float32 weights or Adam's moments (about 1.08x with zstd, measured on
    // DCGAN's): noise whose every 4th byte, the exponent's, takes one of four values.
    // Compressing it would cost the snapshot several times its hashing and writing to save
    // less than a tenth of the bytes.
    let (_dir, store) = store(1 << 20);
    let mut weights = noise(9, 1 << 20);
    weights
        .iter_mut()
        .skip(3)
        .step_by(4)
        .for_each(|b| *b = 0x3c | (*b & 3));
    let small = weights[..1 << 16].to_vec(); // under the sample's threshold: a full try
    let put = store.put_record(b"w", &[&weights, &small]).unwrap();
    store.flush().unwrap();
    let record = store.get_record(&put.id).unwrap();
    for buffer in &record.buffers {
        assert_eq!(
            store.blob_info(&buffer.chunks[0]).unwrap().codec,
            Codec::Raw
        );
    }
    assert_eq!(read_all(&store, &put.id).1, vec![weights, small]);
}

#[test]
fn large_puts_roll_over_into_several_packs() {
    let (dir, store) = store(1 << 20);
    let data = noise(6, 150 << 20);
    let put = store.put_record(b"", &[&data]).unwrap();
    store.flush().unwrap();
    assert_eq!(common::pack_files(&dir.path().join(".relive")).len(), 3);
    assert_eq!(read_all(&store, &put.id).1[0], data);
}

#[test]
fn concurrent_puts_from_many_threads() {
    let (_dir, store) = store(1 << 12);
    let ids: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    (0..20u64)
                        .map(|i| {
                            let shared = noise(1000 + i, 10_000); // the same in every thread
                            let own = noise(t * 100 + i, 9_000);
                            let put = store
                                .put_record(&i.to_le_bytes(), &[&shared, &own])
                                .unwrap();
                            (put.id, shared, own)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    store.flush().unwrap();
    for (id, shared, own) in ids {
        assert_eq!(read_all(&store, &id).1, vec![shared, own]);
    }
}

#[test]
fn dropping_the_store_seals_its_pack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let id = {
        let store = Store::create(&path).unwrap();
        store.put_record(b"kept", &[&noise(7, 5000)]).unwrap().id
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_record(&id).unwrap().payload, b"kept");
}

#[test]
fn read_buffer_into_checks_the_output_length() {
    let (_dir, store) = store(1000);
    let put = store.put_record(b"", &[&noise(8, 2500)]).unwrap();
    let record = store.get_record(&put.id).unwrap();
    let mut short = vec![0u8; 2499];
    assert!(matches!(
        store.read_buffer_into(&record.buffers[0], &mut short),
        Err(relive_store::Error::Invalid(_))
    ));
}

#[test]
fn fingerprints_carry_over_to_the_next_process() {
    let (dir, store) = store(1 << 20);
    let mut data = noise(9, 8 << 20);
    let first = store.put_record(b"p", &[&data]).unwrap();
    store
        .commit(format!(r#"{{"records": ["{}"]}}"#, first.id).as_bytes())
        .unwrap();
    let root = dir.path().join(".relive");
    assert!(root.join("cache").join("fingerprints").exists());
    drop(store);

    // A new process (a forked snapshot child) starts from the cache: same ids, nothing new.
    let again = Store::open(&root).unwrap();
    let same = again.put_record(b"p", &[&data]).unwrap();
    assert_eq!((same.id, same.new_bytes), (first.id, 0));
    // A changed chunk gets its own id and is written; the record reads back exactly.
    data[3 << 20] ^= 1;
    let changed = again.put_record(b"p", &[&data]).unwrap();
    assert_ne!(changed.id, first.id);
    assert!(changed.new_bytes > 1 << 20 && changed.new_bytes < 3 << 20);
    assert_eq!(read_all(&again, &changed.id), (b"p".to_vec(), vec![data]));
}

#[test]
fn a_damaged_fingerprint_cache_is_ignored() {
    let (dir, store) = store(1 << 20);
    let data = noise(4, 4 << 20);
    let put = store.put_record(b"", &[&data]).unwrap();
    store
        .commit(format!(r#"{{"records": ["{}"]}}"#, put.id).as_bytes())
        .unwrap();
    drop(store);
    let root = dir.path().join(".relive");
    std::fs::write(root.join("cache").join("fingerprints"), b"garbage").unwrap();
    let again = Store::open(&root).unwrap();
    assert_eq!(again.put_record(b"", &[&data]).unwrap().id, put.id);
}

#[test]
fn a_record_can_refer_to_a_stored_records_buffer_without_its_bytes() {
    let (_dir, store) = store(1000);
    let old = noise(4, 3500);
    let first = store.put_record(b"first", &[&old, b"small"]).unwrap();
    let stored = store.get_record(&first.id).unwrap().buffers[0].clone();
    let new = noise(5, 1200);
    let put = store
        .put_record_from(
            b"second",
            &[BufferSource::Stored(stored), BufferSource::Bytes(&new)],
        )
        .unwrap();
    assert_eq!(put.raw_bytes, 6 + 3500 + 1200);
    assert!(put.new_bytes < 3500, "the old chunks are not written again");
    assert_eq!(
        read_all(&store, &put.id),
        (b"second".to_vec(), vec![old, new.clone()])
    );
    // The same record, put from the bytes, is the same record.
    let again = store
        .put_record(b"second", &[&noise(4, 3500), &new])
        .unwrap();
    assert_eq!(again.id, put.id);
}

#[test]
fn a_reference_to_a_chunk_no_longer_stored_fails() {
    let (_dir, store) = store(1000);
    let (_other_dir, other) = common::store(1000);
    let put = other.put_record(b"elsewhere", &[&noise(6, 2000)]).unwrap();
    let foreign = other.get_record(&put.id).unwrap().buffers[0].clone();
    assert!(store
        .put_record_from(b"x", &[BufferSource::Stored(foreign)])
        .is_err());
}
