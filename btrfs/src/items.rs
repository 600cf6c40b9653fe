//! Parsers for the item payloads the reader needs.
//!
//! Each takes the raw item data from a leaf and returns an owned structure
//! or [`ReadError::Corrupt`]; none can panic on malformed input.

use super::error::ReadError;
use super::format::*;

/// A timestamp: seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Seconds since 1970-01-01 00:00:00 UTC (negative before).
    pub sec: i64,
    /// Nanoseconds, 0..1_000_000_000.
    pub nsec: u32,
}

impl Timespec {
    fn read(r: &mut Reader<'_>) -> Result<Timespec, ReadError> {
        let sec = r.u64()? as i64;
        let nsec = r.u32()?;
        Ok(Timespec { sec, nsec })
    }
}

/// `btrfs_inode_item`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct InodeItem {
    pub generation: u64,
    pub size: u64,
    pub nbytes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: u64,
    pub flags: u64,
    pub atime: Timespec,
    pub ctime: Timespec,
    pub mtime: Timespec,
    pub otime: Timespec,
}

impl InodeItem {
    pub fn parse(data: &[u8]) -> Result<InodeItem, ReadError> {
        Self::read(&mut Reader::new(data, "inode item"))
    }

    fn read(r: &mut Reader<'_>) -> Result<InodeItem, ReadError> {
        let generation = r.u64()?;
        let _transid = r.u64()?;
        let size = r.u64()?;
        let nbytes = r.u64()?;
        let _block_group = r.u64()?;
        let nlink = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let mode = r.u32()?;
        let rdev = r.u64()?;
        let flags = r.u64()?;
        let _sequence = r.u64()?;
        r.skip(4 * 8)?; // reserved
        let atime = Timespec::read(r)?;
        let ctime = Timespec::read(r)?;
        let mtime = Timespec::read(r)?;
        let otime = Timespec::read(r)?;
        Ok(InodeItem {
            generation,
            size,
            nbytes,
            nlink,
            uid,
            gid,
            mode,
            rdev,
            flags,
            atime,
            ctime,
            mtime,
            otime,
        })
    }
}

/// One entry of a `DIR_ITEM`, `DIR_INDEX` or `XATTR_ITEM` (`btrfs_dir_item`
/// followed by its name and data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirItem {
    /// What the entry points at: an inode (`INODE_ITEM`) or a subvolume
    /// (`ROOT_ITEM`); zero for xattrs.
    pub location: Key,
    /// `BTRFS_FT_*`.
    pub file_type: u8,
    pub name: Vec<u8>,
    /// The value, for xattrs.
    pub data: Vec<u8>,
}

/// Upper bound of names (`BTRFS_NAME_LEN`).
pub(crate) const BTRFS_NAME_LEN: usize = 255;

impl DirItem {
    /// All entries packed in one item (several names can share a hash).
    pub fn parse_all(data: &[u8]) -> Result<Vec<DirItem>, ReadError> {
        let mut r = Reader::new(data, "dir item");
        let mut out = Vec::with_capacity(1);
        while r.remaining() > 0 {
            let location = Key::read(&mut r)?;
            let _transid = r.u64()?;
            let data_len = r.u16()?;
            let name_len = r.u16()?;
            let file_type = r.u8()?;
            let name = r.bytes(name_len.into())?.to_vec();
            let data = r.bytes(data_len.into())?.to_vec();
            out.push(DirItem {
                location,
                file_type,
                name,
                data,
            });
        }
        if out.is_empty() {
            return Err(ReadError::Corrupt("empty dir item".to_string()));
        }
        Ok(out)
    }
}

/// One name of an inode in a parent directory, from an `INODE_REF`
/// (parent in the key offset) or an `INODE_EXTREF` (parent in the item).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InodeRef {
    pub parent: u64,
    pub index: u64,
    pub name: Vec<u8>,
}

impl InodeRef {
    /// Entries of an `INODE_REF` item keyed `(ino, INODE_REF, parent)`.
    pub fn parse_refs(parent: u64, data: &[u8]) -> Result<Vec<InodeRef>, ReadError> {
        let mut r = Reader::new(data, "inode ref");
        let mut out = Vec::with_capacity(1);
        while r.remaining() > 0 {
            out.push(InodeRef::read_one(&mut r, parent)?);
        }
        Ok(out)
    }

    /// Entries of an `INODE_EXTREF` item (key offset is a hash).
    pub fn parse_extrefs(data: &[u8]) -> Result<Vec<InodeRef>, ReadError> {
        let mut r = Reader::new(data, "inode extref");
        let mut out = Vec::with_capacity(1);
        while r.remaining() > 0 {
            let parent = r.u64()?;
            out.push(InodeRef::read_one(&mut r, parent)?);
        }
        Ok(out)
    }

    /// One entry's index and name, after its parent (read by the caller
    /// for extrefs, the key's offset for refs).
    fn read_one(r: &mut Reader<'_>, parent: u64) -> Result<InodeRef, ReadError> {
        let index = r.u64()?;
        let name_len = r.u16()?;
        let name = r.bytes(name_len.into())?.to_vec();
        Ok(InodeRef {
            parent,
            index,
            name,
        })
    }
}

/// `btrfs_root_item`: where a tree is and, for subvolumes, what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RootItem {
    pub generation: u64,
    pub root_dirid: u64,
    pub bytenr: u64,
    /// Transid of the last snapshot taken of this tree (0: never).
    pub last_snapshot: u64,
    pub flags: u64,
    pub refs: u32,
    pub level: u8,
    /// Zero on root items written before the extended format (and on
    /// internal trees).
    pub uuid: [u8; BTRFS_UUID_SIZE],
    pub parent_uuid: [u8; BTRFS_UUID_SIZE],
    pub received_uuid: [u8; BTRFS_UUID_SIZE],
    pub ctime: Timespec,
    pub otime: Timespec,
}

impl RootItem {
    pub fn parse(data: &[u8]) -> Result<RootItem, ReadError> {
        let mut r = Reader::new(data, "root item");
        let _inode = InodeItem::read(&mut r)?;
        let generation = r.u64()?;
        let root_dirid = r.u64()?;
        let bytenr = r.u64()?;
        let _byte_limit = r.u64()?;
        let _bytes_used = r.u64()?;
        let last_snapshot = r.u64()?;
        let flags = r.u64()?;
        let refs = r.u32()?;
        let _drop_progress = Key::read(&mut r)?;
        let _drop_level = r.u8()?;
        let level = r.u8()?;
        let mut item = RootItem {
            generation,
            root_dirid,
            bytenr,
            last_snapshot,
            flags,
            refs,
            level,
            uuid: [0; BTRFS_UUID_SIZE],
            parent_uuid: [0; BTRFS_UUID_SIZE],
            received_uuid: [0; BTRFS_UUID_SIZE],
            ctime: Timespec::default(),
            otime: Timespec::default(),
        };
        // The extended part is present (and valid) when generation_v2
        // matches generation; older kernels wrote the short item.
        if r.remaining() >= 8 {
            let generation_v2 = r.u64()?;
            if generation_v2 == generation {
                item.uuid = r.array()?;
                item.parent_uuid = r.array()?;
                item.received_uuid = r.array()?;
                let _ctransid = r.u64()?;
                let _otransid = r.u64()?;
                let _stransid = r.u64()?;
                let _rtransid = r.u64()?;
                item.ctime = Timespec::read(&mut r)?;
                item.otime = Timespec::read(&mut r)?;
            }
        }
        Ok(item)
    }

    /// Whether the subvolume is read-only.
    pub fn readonly(&self) -> bool {
        self.flags & BTRFS_ROOT_SUBVOL_RDONLY != 0
    }
}

/// `btrfs_root_ref` (in `ROOT_REF` and `ROOT_BACKREF` items): the name of a
/// subvolume in directory `dirid` of its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RootRef {
    pub dirid: u64,
    pub sequence: u64,
    pub name: Vec<u8>,
}

impl RootRef {
    pub fn parse(data: &[u8]) -> Result<RootRef, ReadError> {
        let mut r = Reader::new(data, "root ref");
        let dirid = r.u64()?;
        let sequence = r.u64()?;
        let name_len = r.u16()?;
        let name = r.bytes(name_len.into())?.to_vec();
        Ok(RootRef {
            dirid,
            sequence,
            name,
        })
    }
}

/// The part of `btrfs_file_extent_item` the reader needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileExtent {
    /// Data stored in the item itself.
    Inline {
        /// `BTRFS_COMPRESS_*`; 0 means `data` is the file content.
        compression: u8,
        /// Uncompressed length.
        ram_bytes: u64,
        data: Vec<u8>,
    },
    /// Data in an extent elsewhere (regular or preallocated).
    External { extent_type: u8 },
}

impl FileExtent {
    pub fn parse(data: &[u8]) -> Result<FileExtent, ReadError> {
        let mut r = Reader::new(data, "file extent item");
        let _generation = r.u64()?;
        let ram_bytes = r.u64()?;
        let compression = r.u8()?;
        let encryption = r.u8()?;
        let _other_encoding = r.u16()?;
        let extent_type = r.u8()?;
        if encryption != 0 {
            return Err(ReadError::Unsupported("encrypted file extents".to_string()));
        }
        if extent_type != BTRFS_FILE_EXTENT_INLINE {
            return Ok(FileExtent::External { extent_type });
        }
        let data = r.bytes(r.remaining())?.to_vec();
        Ok(FileExtent::Inline {
            compression,
            ram_bytes,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of `btrfs_inode_item`.
    const INODE_ITEM_SIZE: usize = 160;

    fn dir_item(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&257u64.to_le_bytes());
        v.push(BTRFS_INODE_ITEM_KEY);
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&7u64.to_le_bytes());
        v.extend_from_slice(&(data.len() as u16).to_le_bytes());
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.push(1);
        v.extend_from_slice(name);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn packed_dir_items() {
        let mut v = dir_item(b"a", b"");
        let first_len = v.len();
        v.extend(dir_item(b"user.x", b"val"));
        let items = DirItem::parse_all(&v).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].location, Key::new(257, BTRFS_INODE_ITEM_KEY, 0));
        assert_eq!(items[1].name, b"user.x");
        assert_eq!(items[1].data, b"val");
        // Every truncation is an error, never a panic.
        for cut in 1..v.len() {
            if cut == first_len {
                continue; // a cut between the two entries is valid
            }
            assert!(DirItem::parse_all(&v[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn truncated_items_are_errors() {
        assert!(InodeItem::parse(&[0; INODE_ITEM_SIZE - 1]).is_err());
        assert!(InodeItem::parse(&[0; INODE_ITEM_SIZE]).is_ok());
        assert!(RootItem::parse(&[0; 200]).is_err());
        assert!(RootItem::parse(&[0; 239]).is_ok());
        assert!(RootRef::parse(&[0; 17]).is_err());
        assert!(InodeRef::parse_refs(256, &[1, 0, 0, 0, 0, 0, 0, 0, 5, 0, b'a']).is_err());
        assert!(FileExtent::parse(&[0; 20]).is_err());
    }
}
