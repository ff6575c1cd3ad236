//! Records: a payload and the chunk ids of its buffers.
//!
//! ```text
//! version:u8 = 1
//! n_buffers:u32le
//! per buffer: len:u64le n_chunks:u32le, then n_chunks ids (32 bytes each)
//! payload bytes (the rest)
//! ```

use crate::id::Id;

const VERSION: u8 = 1;

/// A stored record: its payload and references to its buffers' chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub payload: Vec<u8>,
    pub buffers: Vec<BufferRef>,
}

/// A buffer of a record: its length and the ids of the chunks that make it up, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferRef {
    pub len: u64,
    pub chunks: Vec<Id>,
}

/// Encodes a record whose buffers have lengths `lens` and chunk ids `chunks` (all buffers' chunks,
/// in order; buffer `i` has `ceil(lens[i] / chunk_size)` of them).
pub(crate) fn encode(payload: &[u8], lens: &[u64], chunks: &[Id], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + lens.len() * 12 + chunks.len() * 32 + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&(lens.len() as u32).to_le_bytes());
    let mut rest = chunks;
    for &len in lens {
        let n = len.div_ceil(chunk_size as u64) as usize;
        let (mine, others) = rest.split_at(n.min(rest.len()));
        rest = others;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(mine.len() as u32).to_le_bytes());
        for id in mine {
            out.extend_from_slice(&id.0);
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Decodes a record; the error describes what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record, String> {
    let mut r = Reader(bytes);
    let version = r.take(1)?[0];
    if version != VERSION {
        return Err(format!(
            "record version {version} is unknown to this relive (upgrade relive?)"
        ));
    }
    let n_buffers = r.u32()? as usize;
    if n_buffers > r.0.len() / 12 {
        return Err(format!(
            "it claims {n_buffers} buffers, more than it can hold"
        ));
    }
    let mut buffers = Vec::with_capacity(n_buffers);
    for i in 0..n_buffers {
        let len = r.u64()?;
        let n_chunks = r.u32()? as usize;
        if n_chunks > r.0.len() / 32 {
            return Err(format!(
                "buffer {i} claims {n_chunks} chunks, more than the record holds"
            ));
        }
        if (len == 0) != (n_chunks == 0) || n_chunks as u64 > len {
            return Err(format!(
                "buffer {i} of {len} bytes cannot have {n_chunks} chunks"
            ));
        }
        let chunks = r
            .take(n_chunks * 32)?
            .chunks_exact(32)
            .map(|c| Id(c.try_into().unwrap_or_default()))
            .collect();
        buffers.push(BufferRef { len, chunks });
    }
    Ok(Record {
        payload: r.0.to_vec(),
        buffers,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("it ends too early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ids: Vec<Id> = (0u8..4).map(|i| Id::of(&[i])).collect();
        let bytes = encode(b"payload", &[10, 0, 3], &ids, 4);
        let record = decode(&bytes).unwrap();
        assert_eq!(record.payload, b"payload");
        assert_eq!(record.buffers.len(), 3);
        assert_eq!(
            record.buffers[0],
            BufferRef {
                len: 10,
                chunks: ids[..3].to_vec()
            }
        );
        assert_eq!(
            record.buffers[1],
            BufferRef {
                len: 0,
                chunks: vec![]
            }
        );
        assert_eq!(
            record.buffers[2],
            BufferRef {
                len: 3,
                chunks: vec![ids[3]]
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode(b"p", &[5], &[Id::of(b"x")], 8);
        for cut in 0..good.len() - 1 {
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0, 0, 0, 0]).is_err());
        assert!(decode(&[1, 255, 255, 255, 255]).is_err());
        let mut huge = vec![1, 1, 0, 0, 0];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        for seed in 0..2000u32 {
            let mut bytes = good.clone();
            let h = blake3::hash(&seed.to_le_bytes());
            let at = h.as_bytes()[0] as usize % bytes.len();
            bytes[at] ^= h.as_bytes()[1] | 1;
            let _ = decode(&bytes);
        }
    }
}
