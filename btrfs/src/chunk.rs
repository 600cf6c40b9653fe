//! Chunks: the mapping from logical addresses to offsets in the image.
//!
//! The superblock's system chunk array maps the chunk tree itself; the chunk
//! tree maps everything else. Only profiles in which every stripe holds a
//! whole copy (SINGLE, DUP, RAID1*) can be read from one device, which is
//! what `mkfs.btrfs` produces on a single image file.

use std::collections::BTreeMap;

use super::error::ReadError;
use super::format::*;
use super::layout;

/// One stripe of a chunk: where a copy lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stripe {
    pub devid: u64,
    pub offset: u64,
}

/// A `btrfs_chunk` item: `length` bytes starting at logical `logical`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub logical: u64,
    pub length: u64,
    pub chunk_type: u64,
    pub stripes: Vec<Stripe>,
}

impl Chunk {
    /// Parse a chunk item whose key offset is `logical`; `r` is left after
    /// the last stripe.
    pub fn read(logical: u64, r: &mut Reader<'_>) -> Result<Chunk, ReadError> {
        let head = r.read::<layout::Chunk>()?;
        let (length, chunk_type) = (head.length.get(), head.chunk_type.get());
        let num_stripes = head.num_stripes.get();
        if num_stripes == 0 {
            return Err(ReadError::Corrupt(format!(
                "chunk at {logical} has no stripes"
            )));
        }
        if length == 0 || logical.checked_add(length).is_none() {
            return Err(ReadError::Corrupt(format!(
                "chunk at {logical} has length {length}"
            )));
        }
        let mut stripes = Vec::with_capacity(num_stripes.into());
        for _ in 0..num_stripes {
            let stripe = r.read::<layout::Stripe>()?;
            stripes.push(Stripe {
                devid: stripe.devid.get(),
                offset: stripe.offset.get(),
            });
        }
        Ok(Chunk {
            logical,
            length,
            chunk_type,
            stripes,
        })
    }
}

/// Logical → physical mapping for the device in the image file.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkMap {
    /// Keyed by the chunk's logical start.
    chunks: BTreeMap<u64, Chunk>,
}

impl ChunkMap {
    /// The map of the system chunks listed in the superblock.
    pub fn from_sys_chunk_array(array: &[u8]) -> Result<ChunkMap, ReadError> {
        let mut map = ChunkMap::default();
        let mut r = Reader::new(array, "system chunk array");
        while r.remaining() > 0 {
            let key = Key::read(&mut r)?;
            if key.item_type != BTRFS_CHUNK_ITEM_KEY {
                return Err(ReadError::Corrupt(format!(
                    "system chunk array holds key {key}, not a chunk item"
                )));
            }
            map.insert(Chunk::read(key.offset, &mut r)?)?;
        }
        if map.chunks.is_empty() {
            return Err(ReadError::Corrupt(
                "system chunk array is empty".to_string(),
            ));
        }
        Ok(map)
    }

    /// Add a chunk. An identical chunk may be added twice (the system chunks
    /// are in both the superblock and the chunk tree); overlaps are corrupt.
    pub fn insert(&mut self, chunk: Chunk) -> Result<(), ReadError> {
        let end = chunk.logical + chunk.length;
        if let Some((_, prev)) = self.chunks.range(..end).next_back() {
            if *prev == chunk {
                return Ok(());
            }
            if prev.logical + prev.length > chunk.logical {
                return Err(ReadError::Corrupt(format!(
                    "chunks at logical {} and {} overlap",
                    prev.logical, chunk.logical
                )));
            }
        }
        self.chunks.insert(chunk.logical, chunk);
        Ok(())
    }

    /// Physical offsets of every copy of `len` bytes at `logical` that lives
    /// on device `devid`, in stripe order.
    pub fn map(&self, logical: u64, len: u64, devid: u64) -> Result<Vec<u64>, ReadError> {
        let (_, chunk) = self
            .chunks
            .range(..=logical)
            .next_back()
            .ok_or(ReadError::UnmappedLogical(logical))?;
        let within = logical - chunk.logical;
        if within >= chunk.length {
            return Err(ReadError::UnmappedLogical(logical));
        }
        let end = within.checked_add(len);
        if !matches!(end, Some(end) if end <= chunk.length) {
            return Err(ReadError::Corrupt(format!(
                "{len} bytes at logical {logical} cross the end of chunk {}",
                chunk.logical
            )));
        }
        let profile = chunk.chunk_type & (BTRFS_BLOCK_GROUP_MIRRORED | BTRFS_BLOCK_GROUP_STRIPED);
        if profile & BTRFS_BLOCK_GROUP_STRIPED != 0 && chunk.stripes.len() > 1 {
            return Err(ReadError::Unsupported(format!(
                "striped chunk profile {profile:#x} at logical {}",
                chunk.logical
            )));
        }
        let copies: Vec<u64> = chunk
            .stripes
            .iter()
            .filter(|s| s.devid == devid)
            .filter_map(|s| s.offset.checked_add(within))
            .collect();
        if copies.is_empty() {
            return Err(ReadError::Unsupported(format!(
                "logical {logical} is only stored on other devices (devids {:?}); \
                 multi-device filesystems are not supported",
                chunk.stripes.iter().map(|s| s.devid).collect::<Vec<_>>()
            )));
        }
        Ok(copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(logical: u64, length: u64, stripes: &[(u64, u64)], chunk_type: u64) -> Chunk {
        Chunk {
            logical,
            length,
            chunk_type,
            stripes: stripes
                .iter()
                .map(|&(devid, offset)| Stripe { devid, offset })
                .collect(),
        }
    }

    #[test]
    fn maps_single_and_dup() {
        let mut m = ChunkMap::default();
        m.insert(chunk(1 << 20, 1 << 20, &[(1, 5 << 20)], 1))
            .unwrap();
        m.insert(chunk(
            4 << 20,
            1 << 20,
            &[(1, 8 << 20), (1, 9 << 20)],
            4 | BTRFS_BLOCK_GROUP_DUP,
        ))
        .unwrap();
        assert_eq!(m.map((1 << 20) + 7, 1, 1).unwrap(), vec![(5 << 20) + 7]);
        assert_eq!(m.map(4 << 20, 16384, 1).unwrap(), vec![8 << 20, 9 << 20]);
        assert!(matches!(
            m.map(3 << 20, 1, 1),
            Err(ReadError::UnmappedLogical(_))
        ));
        assert!(matches!(m.map(0, 1, 1), Err(ReadError::UnmappedLogical(0))));
        assert!(m.map((2 << 20) - 1, 2, 1).is_err());
        assert!(matches!(
            m.map(1 << 20, 1, 2),
            Err(ReadError::Unsupported(_))
        ));
    }

    #[test]
    fn overlapping_chunks_are_corrupt() {
        let mut m = ChunkMap::default();
        m.insert(chunk(0, 100, &[(1, 0)], 1)).unwrap();
        m.insert(chunk(0, 100, &[(1, 0)], 1)).unwrap();
        assert!(m.insert(chunk(50, 100, &[(1, 0)], 1)).is_err());
        assert_eq!(m.chunks.len(), 1);
    }

    #[test]
    fn sys_chunk_array_garbage_is_an_error() {
        assert!(ChunkMap::from_sys_chunk_array(&[]).is_err());
        assert!(ChunkMap::from_sys_chunk_array(&[0xff; 40]).is_err());
        let mut a = vec![0u8; 17];
        a[8] = BTRFS_CHUNK_ITEM_KEY;
        a.extend_from_slice(&[0u8; 48]);
        assert!(ChunkMap::from_sys_chunk_array(&a).is_err());
    }
}
