//! Parsers for the item payloads the reader needs.
//!
//! Each takes the raw item data from a leaf and returns an owned structure
//! or [`ReadError::Corrupt`]; none can panic on malformed input.

use super::error::ReadError;
use super::format::*;
use super::layout;

/// A timestamp: seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Seconds since 1970-01-01 00:00:00 UTC (negative before).
    pub sec: i64,
    /// Nanoseconds, 0..1_000_000_000.
    pub nsec: u32,
}

impl Timespec {
    /// The time a `btrfs_timespec` holds.
    pub(crate) fn from_disk(t: &layout::Timespec) -> Timespec {
        Timespec {
            sec: t.sec.get(),
            nsec: t.nsec.get(),
        }
    }

    /// This time as a `btrfs_timespec`.
    pub(crate) fn to_disk(self) -> layout::Timespec {
        layout::Timespec {
            sec: self.sec.into(),
            nsec: self.nsec.into(),
        }
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
        let it = Reader::new(data, "inode item").read::<layout::InodeItem>()?;
        Ok(InodeItem::from_disk(it))
    }

    fn from_disk(it: &layout::InodeItem) -> InodeItem {
        InodeItem {
            generation: it.generation.get(),
            size: it.size.get(),
            nbytes: it.nbytes.get(),
            nlink: it.nlink.get(),
            uid: it.uid.get(),
            gid: it.gid.get(),
            mode: it.mode.get(),
            rdev: it.rdev.get(),
            flags: it.flags.get(),
            atime: Timespec::from_disk(&it.atime),
            ctime: Timespec::from_disk(&it.ctime),
            mtime: Timespec::from_disk(&it.mtime),
            otime: Timespec::from_disk(&it.otime),
        }
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
            let head = r.read::<layout::DirItem>()?;
            let name = r.bytes(head.name_len.get().into())?.to_vec();
            let data = r.bytes(head.data_len.get().into())?.to_vec();
            out.push(DirItem {
                location: Key::from_disk(&head.location),
                file_type: head.file_type,
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
            let head = r.read::<layout::InodeRef>()?;
            let name = r.bytes(head.name_len.get().into())?.to_vec();
            out.push(InodeRef {
                parent,
                index: head.index.get(),
                name,
            });
        }
        Ok(out)
    }

    /// Entries of an `INODE_EXTREF` item (key offset is a hash).
    pub fn parse_extrefs(data: &[u8]) -> Result<Vec<InodeRef>, ReadError> {
        let mut r = Reader::new(data, "inode extref");
        let mut out = Vec::with_capacity(1);
        while r.remaining() > 0 {
            let head = r.read::<layout::InodeExtref>()?;
            let name = r.bytes(head.name_len.get().into())?.to_vec();
            out.push(InodeRef {
                parent: head.parent_objectid.get(),
                index: head.index.get(),
                name,
            });
        }
        Ok(out)
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
        let base = Reader::new(data, "root item").read::<layout::RootItem>()?;
        let mut item = RootItem {
            generation: base.generation.get(),
            root_dirid: base.root_dirid.get(),
            bytenr: base.bytenr.get(),
            last_snapshot: base.last_snapshot.get(),
            flags: base.flags.get(),
            refs: base.refs.get(),
            level: base.level,
            uuid: [0; BTRFS_UUID_SIZE],
            parent_uuid: [0; BTRFS_UUID_SIZE],
            received_uuid: [0; BTRFS_UUID_SIZE],
            ctime: Timespec::default(),
            otime: Timespec::default(),
        };
        // Older kernels wrote the short item; the extended part counts
        // only when generation_v2 matches generation.
        if let Some(v2) = layout::RootItemV2::extended(data) {
            item.uuid = v2.ext.uuid;
            item.parent_uuid = v2.ext.parent_uuid;
            item.received_uuid = v2.ext.received_uuid;
            item.ctime = Timespec::from_disk(&v2.ext.ctime);
            item.otime = Timespec::from_disk(&v2.ext.otime);
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
        let head = r.read::<layout::RootRef>()?;
        let name = r.bytes(head.name_len.get().into())?.to_vec();
        Ok(RootRef {
            dirid: head.dirid.get(),
            sequence: head.sequence.get(),
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
        let head = r.read::<layout::FileExtentItem>()?;
        let extent_type = head.extent_type;
        if head.encryption != 0 {
            return Err(ReadError::Unsupported("encrypted file extents".to_string()));
        }
        if extent_type != BTRFS_FILE_EXTENT_INLINE {
            return Ok(FileExtent::External { extent_type });
        }
        let data = r.bytes(r.remaining())?.to_vec();
        Ok(FileExtent::Inline {
            compression: head.compression,
            ram_bytes: head.ram_bytes.get(),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of `btrfs_inode_item`.
    const INODE_ITEM_SIZE: usize = std::mem::size_of::<layout::InodeItem>();

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
