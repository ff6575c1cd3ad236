//! Pack files: blobs back to back, then an index that names each by id.
//!
//! ```text
//! b"RLVPACK\x01"
//! stored bytes of each blob, back to back
//! index section: per blob  id[32] kind:u8 codec:u8 offset:u64le stored_len:u32le raw_len:u32le
//!                then      count:u32le
//! blake3(index section)[32]
//! b"RLVPIDX\x01"
//! ```
//!
//! A pack's file name is the hash of its index section. Blob contents are verified on every read
//! against their ids (the hash of the raw bytes), so the index hash only guards the layout.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use zstd::bulk::{Compressor, Decompressor};

use crate::backend::{Backend, Object};
use crate::error::Result;
use crate::id::Id;
use crate::pack_file::PackFile;

pub(crate) const PACK_MAGIC: &[u8; 8] = b"RLVPACK\x01";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"RLVPIDX\x01";
const ENTRY_LEN: usize = 32 + 1 + 1 + 8 + 4 + 4;
/// count + hash + magic
const FOOTER_LEN: u64 = 4 + 32 + 8;
/// A writer seals its open pack once it is this large.
pub(crate) const PACK_TARGET_SIZE: u64 = 64 << 20;
/// zstd never expands more than this: a block (at most 128 KiB) needs at least 4 bytes.
const MAX_ZSTD_RATIO: u64 = 32 * 1024;

pub(crate) const CHUNK_LEVEL: i32 = 1;
pub(crate) const RECORD_LEVEL: i32 = 3;

/// What a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A piece of a large buffer.
    Chunk = 0,
    /// An encoded [`crate::Record`].
    Record = 1,
}

/// How a blob's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

/// Where and how a blob is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub kind: Kind,
    pub codec: Codec,
    pub stored_len: u32,
    pub raw_len: u32,
    pub pack: PathBuf,
}

/// One blob in a pack's index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) id: Id,
    pub(crate) kind: Kind,
    pub(crate) codec: Codec,
    pub(crate) offset: u64,
    pub(crate) stored_len: u32,
    pub(crate) raw_len: u32,
}

/// The name of the pack `id` in its store: `packs/<2 hex>/<64 hex>.pack`.
pub(crate) fn pack_name(id: &Id) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// Every `packs/<2 hex>/<64 hex>.pack` object, by the id its name claims, with its name and
/// size. Anything else is ignored.
pub(crate) fn list_packs(backend: &dyn Backend) -> Result<Vec<(Id, String, u64)>> {
    let mut packs = Vec::new();
    for (name, len) in backend.list("packs/")? {
        let Some((prefix, file)) = name["packs/".len()..].split_once('/') else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".pack") else {
            continue;
        };
        if prefix.len() == 2 && Id::is_canonical(stem) && stem.starts_with(prefix) {
            if let Some(id) = Id::from_hex(stem) {
                packs.push((id, name.clone(), len));
            }
        }
    }
    packs.sort();
    Ok(packs)
}

/// A pack's index, read and checked.
pub(crate) struct PackIndex {
    /// The hash of the index section: the pack's proper name.
    pub(crate) hash: Id,
    pub(crate) entries: Vec<Entry>,
}

/// Reads and checks the index at the end of a pack. The error is a description of the damage.
pub(crate) fn read_index(file: &dyn Object) -> Result<PackIndex, String> {
    let io = |e: io::Error| format!("cannot read the pack: {e}");
    let len = file
        .size()
        .map_err(|e| format!("cannot read the pack: {e}"))?;
    if len < PACK_MAGIC.len() as u64 + FOOTER_LEN {
        return Err(format!(
            "the pack is {len} bytes long, too short to be complete (truncated?)"
        ));
    }
    let mut header = [0u8; 8];
    file.read_at(0, &mut header).map_err(io)?;
    if &header != PACK_MAGIC {
        return Err("the file does not start like a pack".into());
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_at(len - FOOTER_LEN, &mut footer).map_err(io)?;
    if &footer[36..] != INDEX_MAGIC {
        return Err("the pack does not end with an index (truncated or overwritten)".into());
    }
    let count = u32::from_le_bytes(footer[..4].try_into().unwrap_or_default());
    let index_len = u64::from(count) * ENTRY_LEN as u64;
    let data_end = (len - FOOTER_LEN)
        .checked_sub(index_len)
        .filter(|end| *end >= PACK_MAGIC.len() as u64)
        .ok_or_else(|| format!("the index claims {count} blobs, more than the pack can hold"))?;
    // The hashed section: the entries and the count after them.
    let mut section = vec![0u8; index_len as usize + 4];
    file.read_at(data_end, &mut section).map_err(io)?;
    let hash = Id::of(&section);
    if hash.0[..] != footer[4..36] {
        return Err("the index does not match its hash".into());
    }
    let entries = section[..index_len as usize]
        .chunks_exact(ENTRY_LEN)
        .map(|raw| decode_entry(raw, data_end))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(PackIndex { hash, entries })
}

fn decode_entry(raw: &[u8], data_end: u64) -> Result<Entry, String> {
    let mut id = [0u8; 32];
    id.copy_from_slice(&raw[..32]);
    let id = Id(id);
    let le64 = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or_default());
    let le32 = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
    let kind = match raw[32] {
        0 => Kind::Chunk,
        1 => Kind::Record,
        k => return Err(format!("blob {id} has unknown kind {k}")),
    };
    let codec = match raw[33] {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        c => return Err(format!("blob {id} has unknown codec {c}")),
    };
    let (offset, stored_len, raw_len) = (le64(34), le32(42), le32(46));
    let end = offset.checked_add(u64::from(stored_len));
    if offset < PACK_MAGIC.len() as u64 || end.is_none_or(|end| end > data_end) {
        return Err(format!("blob {id} lies outside the pack's data"));
    }
    let plausible = match codec {
        Codec::Raw => stored_len == raw_len,
        Codec::Zstd => u64::from(raw_len) <= u64::from(stored_len) * MAX_ZSTD_RATIO,
    };
    if !plausible {
        return Err(format!(
            "blob {id}: {stored_len} stored bytes cannot hold {raw_len} raw bytes"
        ));
    }
    Ok(Entry {
        id,
        kind,
        codec,
        offset,
        stored_len,
        raw_len,
    })
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.id.0);
    out.push(e.kind as u8);
    out.push(e.codec as u8);
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.stored_len.to_le_bytes());
    out.extend_from_slice(&e.raw_len.to_le_bytes());
}

/// A blob's bytes as they go into a pack.
pub(crate) enum Stored<'a> {
    Raw(&'a [u8]),
    Zstd(Vec<u8>),
}

impl Stored<'_> {
    pub(crate) fn codec(&self) -> Codec {
        match self {
            Stored::Raw(_) => Codec::Raw,
            Stored::Zstd(_) => Codec::Zstd,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Stored::Raw(b) => b,
            Stored::Zstd(b) => b,
        }
    }
}

/// Chunks at least this long are first tried on a sample (see `sample_compresses`).
const SAMPLE_FROM: usize = 256 << 10;
/// The length of each of the sample's three pieces.
const SAMPLE_PIECE: usize = 16 << 10;

/// Compression must save at least this share of a chunk (1/5) to be kept. zstd level 1 runs at
/// 0.2-0.7 GB/s here, several times the cost of hashing and writing a chunk: worth it for images,
/// labels and small integers held as floats (2-7x), not for trained float weights and optimizer
/// moments (1.08x on DCGAN's, which cost a snapshot 4x the CPU when compressed).
const MIN_SAVING_DIVISOR: usize = 5;

fn compressed_limit(len: usize) -> usize {
    len - len / MIN_SAVING_DIVISOR
}

/// Compresses `raw` when that saves enough (see `MIN_SAVING_DIVISOR`); otherwise keeps it raw,
/// so that reading it costs no decompression either.
pub(crate) fn compress<'a>(cctx: Option<&mut Compressor<'static>>, raw: &'a [u8]) -> Stored<'a> {
    let Some(cctx) = cctx else {
        return Stored::Raw(raw);
    };
    if !sample_compresses(cctx, raw) {
        return Stored::Raw(raw);
    }
    compress_judged(cctx, raw)
}

/// [`compress`] without the sample: for a chunk whose [`sample`] was judged already (or too
/// short to have one).
pub(crate) fn compress_judged<'a>(cctx: &mut Compressor<'static>, raw: &'a [u8]) -> Stored<'a> {
    if raw.len() < 64 {
        return Stored::Raw(raw);
    }
    let limit = compressed_limit(raw.len());
    let mut out = Vec::with_capacity(limit);
    // An error here is almost always "the output would not fit in `limit`": not worth it.
    match cctx.compress_to_buffer(raw, &mut out) {
        Ok(n) if n <= limit => Stored::Zstd(out),
        _ => Stored::Raw(raw),
    }
}

/// Whether three pieces of `raw` (its start, middle and end: [`sample`]) compress enough
/// together. On incompressible data (float noise, trained weights: most of a large state) a
/// full zstd pass costs several times the hashing and writing of the chunk; the sample costs
/// 5% of it. A chunk misjudged as incompressible is only stored larger than it could be.
fn sample_compresses(cctx: &mut Compressor<'static>, raw: &[u8]) -> bool {
    let Some(sample) = sample(raw) else {
        return true;
    };
    let limit = compressed_limit(sample.len());
    let mut out = Vec::with_capacity(limit);
    matches!(cctx.compress_to_buffer(&sample, &mut out), Ok(n) if n <= limit)
}

/// What a chunk of at least [`SAMPLE_FROM`] bytes is judged by: its start, middle and end,
/// one after the other; None for a shorter one (judged whole). The sample compresses (by
/// [`compress`], which then tries it whole) exactly where the chunk is worth compressing.
pub(crate) fn sample(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < SAMPLE_FROM {
        return None;
    }
    let middle = raw.len() / 2 - SAMPLE_PIECE / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE_PIECE);
    for start in [0, middle, raw.len() - SAMPLE_PIECE] {
        sample.extend_from_slice(&raw[start..start + SAMPLE_PIECE]);
    }
    Some(sample)
}

/// Reads blob `e` of `file` into `out` (exactly `e.raw_len` bytes) and checks it against its id.
/// On error `out` holds unverified bytes and must not be used.
pub(crate) fn read_blob_into(
    file: &dyn Object,
    e: &Entry,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
    dctx: &mut Option<Decompressor<'static>>,
) -> Result<(), BlobError> {
    if out.len() != e.raw_len as usize {
        return Err(BlobError::Corrupt(format!(
            "the index says {} bytes, {} were expected",
            e.raw_len,
            out.len()
        )));
    }
    match e.codec {
        Codec::Raw => file.read_at(e.offset, out).map_err(BlobError::Io)?,
        Codec::Zstd => {
            scratch.clear();
            scratch.resize(e.stored_len as usize, 0);
            file.read_at(e.offset, scratch).map_err(BlobError::Io)?;
            if dctx.is_none() {
                *dctx = Some(Decompressor::new().map_err(BlobError::Io)?);
            }
            let dctx = dctx
                .as_mut()
                .ok_or_else(|| BlobError::Corrupt("no zstd context".into()))?;
            match dctx.decompress_to_buffer(scratch.as_slice(), out) {
                Ok(n) if n == out.len() => {}
                Ok(n) => {
                    return Err(BlobError::Corrupt(format!(
                        "decompressed to {n} bytes, the index says {}",
                        out.len()
                    )))
                }
                Err(err) => return Err(BlobError::Corrupt(format!("cannot decompress: {err}"))),
            }
        }
    }
    if Id::of(out) != e.id {
        return Err(BlobError::Corrupt(
            "its content does not match its id".into(),
        ));
    }
    Ok(())
}

pub(crate) enum BlobError {
    Io(io::Error),
    Corrupt(String),
}

#[cfg(unix)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub(crate) fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The pack being written, in `tmp/` until it is sealed.
pub(crate) struct OpenPack {
    file: PackFile,
    entries: Vec<Entry>,
    by_id: HashMap<Id, usize>,
    len: u64,
    /// The process that created it: after `fork` the child must not touch its parent's pack.
    pid: u32,
}

impl OpenPack {
    pub(crate) fn create(tmp_dir: &Path) -> Result<OpenPack> {
        let mut file = PackFile::create(tmp_dir)?;
        if let Err(e) = file.write_all(PACK_MAGIC) {
            let _ = fs::remove_file(file.path());
            return Err(e);
        }
        Ok(OpenPack {
            file,
            entries: Vec::new(),
            by_id: HashMap::new(),
            len: PACK_MAGIC.len() as u64,
            pid: std::process::id(),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn owned_by_this_process(&self) -> bool {
        self.pid == std::process::id()
    }

    pub(crate) fn contains(&self, id: &Id) -> bool {
        self.by_id.contains_key(id)
    }

    /// Appends one blob. After an error the pack must be discarded.
    pub(crate) fn append(
        &mut self,
        id: Id,
        kind: Kind,
        stored: &Stored,
        raw_len: u32,
    ) -> Result<()> {
        let bytes = stored.bytes();
        let stored_len = u32::try_from(bytes.len()).map_err(|_| {
            crate::Error::Invalid(format!(
                "blob {id} is too large for a pack ({} bytes)",
                bytes.len()
            ))
        })?;
        self.file.write_all(bytes)?;
        let entry = Entry {
            id,
            kind,
            codec: stored.codec(),
            offset: self.len,
            stored_len,
            raw_len,
        };
        self.by_id.insert(id, self.entries.len());
        self.entries.push(entry);
        self.len += u64::from(stored_len);
        Ok(())
    }

    /// Writes the index and syncs. Returns the pack's id, the staged file (for the store to
    /// publish) and its entries. An empty pack is discarded (and returns no entries).
    /// `sync`: whether the staged file itself must be durable (a local store's pack is; one
    /// staged for upload is durable once uploaded).
    pub(crate) fn seal(mut self, sync: bool) -> Result<(Id, PathBuf, Vec<Entry>)> {
        if self.entries.is_empty() {
            let _ = fs::remove_file(self.file.path());
            return Ok((Id([0; 32]), PathBuf::new(), Vec::new()));
        }
        let result = self.finish(sync);
        if result.is_err() {
            let _ = fs::remove_file(self.file.path());
        }
        result.map(|id| {
            (
                id,
                self.file.path().to_path_buf(),
                std::mem::take(&mut self.entries),
            )
        })
    }

    fn finish(&mut self, sync: bool) -> Result<Id> {
        let count = u32::try_from(self.entries.len())
            .map_err(|_| crate::Error::Invalid("too many blobs in one pack".into()))?;
        let mut tail = Vec::with_capacity(self.entries.len() * ENTRY_LEN + FOOTER_LEN as usize);
        for e in &self.entries {
            encode_entry(e, &mut tail);
        }
        tail.extend_from_slice(&count.to_le_bytes());
        let id = Id::of(&tail);
        tail.extend_from_slice(&id.0);
        tail.extend_from_slice(INDEX_MAGIC);
        self.file.write_all(&tail)?;
        self.file.finish(sync)?;
        Ok(id)
    }

    /// Drops the pack and its file (after a failed write).
    pub(crate) fn discard(self) {
        let _ = fs::remove_file(self.file.path());
    }
}

/// An object held in memory (a pack fetched whole).
pub(crate) struct InMemory(pub(crate) Vec<u8>);

impl Object for InMemory {
    fn size(&self) -> crate::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = start
            .checked_add(out.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        out.copy_from_slice(bytes);
        Ok(())
    }
}
