//! The superblock: where every tree starts.

use super::error::ReadError;
use zerocopy::FromBytes;

use super::format::*;
use super::layout;

/// Checksum algorithm of a filesystem (`btrfs_super_block::csum_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumType {
    /// CRC-32C, the default; the only one this reader verifies.
    Crc32c,
    /// xxHash64.
    Xxhash64,
    /// SHA-256.
    Sha256,
    /// BLAKE2b-256.
    Blake2b,
}

impl ChecksumType {
    fn from_disk(v: u16) -> Result<ChecksumType, ReadError> {
        match v {
            BTRFS_CSUM_TYPE_CRC32 => Ok(ChecksumType::Crc32c),
            BTRFS_CSUM_TYPE_XXHASH => Ok(ChecksumType::Xxhash64),
            BTRFS_CSUM_TYPE_SHA256 => Ok(ChecksumType::Sha256),
            BTRFS_CSUM_TYPE_BLAKE2 => Ok(ChecksumType::Blake2b),
            other => Err(ReadError::UnsupportedChecksum(format!(
                "unknown type {other}"
            ))),
        }
    }

    /// The name btrfs-progs uses (`--csum NAME`).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Crc32c => "crc32c",
            ChecksumType::Xxhash64 => "xxhash64",
            ChecksumType::Sha256 => "sha256",
            ChecksumType::Blake2b => "blake2b",
        }
    }

    /// Whether `data` (everything after the checksum field) matches the
    /// checksum field `stored`.
    pub(crate) fn verify(self, stored: &[u8], data: &[u8]) -> Result<bool, ReadError> {
        match self {
            ChecksumType::Crc32c => {
                let crc = crc32c::crc32c(data).to_le_bytes();
                Ok(stored.get(..crc.len()) == Some(&crc[..]))
            }
            other => Err(ReadError::UnsupportedChecksum(other.name().to_string())),
        }
    }
}

impl std::fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fields of `btrfs_super_block` the reader uses.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    pub fsid: [u8; BTRFS_UUID_SIZE],
    /// The fsid written into tree block headers: `metadata_uuid` when the
    /// METADATA_UUID feature is on, `fsid` otherwise.
    pub metadata_fsid: [u8; BTRFS_UUID_SIZE],
    pub generation: u64,
    pub root: u64,
    pub chunk_root: u64,
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub root_dir_objectid: u64,
    pub num_devices: u64,
    pub sectorsize: u32,
    pub nodesize: u32,
    pub chunk_root_generation: u64,
    pub compat_ro_flags: u64,
    pub incompat_flags: u64,
    pub csum_type: ChecksumType,
    pub root_level: u8,
    pub chunk_root_level: u8,
    pub devid: u64,
    pub label: String,
    pub sys_chunk_array: Vec<u8>,
}

impl Superblock {
    /// Parse and verify the 4 KiB primary superblock.
    pub fn parse(buf: &[u8]) -> Result<Superblock, ReadError> {
        let sb = match layout::SuperBlock::ref_from_prefix(buf) {
            Ok((sb, _)) if sb.magic == BTRFS_MAGIC => sb,
            _ => return Err(ReadError::NotBtrfs),
        };
        let buf = &buf[..BTRFS_SUPER_INFO_SIZE];
        let csum_type = ChecksumType::from_disk(sb.csum_type.get())?;
        if !csum_type.verify(&sb.csum, &buf[BTRFS_CSUM_SIZE..])? {
            return Err(ReadError::BadSuperblockChecksum);
        }

        let fsid = sb.fsid;
        let bytenr = sb.bytenr.get();
        let sectorsize = sb.sectorsize.get();
        let nodesize = sb.nodesize.get();
        let sys_chunk_array_size = sb.sys_chunk_array_size.get() as usize;
        let incompat_flags = sb.incompat_flags.get();
        let (root_level, chunk_root_level) = (sb.root_level, sb.chunk_root_level);
        let label_len = sb
            .label
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(sb.label.len());
        let label = String::from_utf8_lossy(&sb.label[..label_len]).into_owned();
        let metadata_fsid = if incompat_flags & BTRFS_FEATURE_INCOMPAT_METADATA_UUID != 0 {
            sb.metadata_uuid
        } else {
            fsid
        };

        let corrupt = |what: String| Err(ReadError::Corrupt(format!("superblock: {what}")));
        if bytenr != BTRFS_SUPER_INFO_OFFSET {
            return corrupt(format!(
                "bytenr {bytenr}, expected {BTRFS_SUPER_INFO_OFFSET}"
            ));
        }
        if !sectorsize.is_power_of_two() || !(4096..=65536).contains(&sectorsize) {
            return corrupt(format!("invalid sectorsize {sectorsize}"));
        }
        if !nodesize.is_power_of_two() || !(sectorsize..=65536).contains(&nodesize) {
            return corrupt(format!("invalid nodesize {nodesize}"));
        }
        if sys_chunk_array_size > BTRFS_SYSTEM_CHUNK_ARRAY_SIZE {
            return corrupt(format!(
                "sys_chunk_array_size {sys_chunk_array_size} too large"
            ));
        }
        if root_level >= BTRFS_MAX_LEVEL || chunk_root_level >= BTRFS_MAX_LEVEL {
            return corrupt("tree root level out of range".to_string());
        }
        if incompat_flags & BTRFS_FEATURE_INCOMPAT_EXTENT_TREE_V2 != 0 {
            return Err(ReadError::Unsupported(
                "extent-tree-v2 filesystems".to_string(),
            ));
        }
        let sys_chunk_array = sb.sys_chunk_array[..sys_chunk_array_size].to_vec();

        Ok(Superblock {
            fsid,
            metadata_fsid,
            generation: sb.generation.get(),
            root: sb.root.get(),
            chunk_root: sb.chunk_root.get(),
            total_bytes: sb.total_bytes.get(),
            bytes_used: sb.bytes_used.get(),
            root_dir_objectid: sb.root_dir_objectid.get(),
            num_devices: sb.num_devices.get(),
            sectorsize,
            nodesize,
            chunk_root_generation: sb.chunk_root_generation.get(),
            compat_ro_flags: sb.compat_ro_flags.get(),
            incompat_flags,
            csum_type,
            root_level,
            chunk_root_level,
            devid: sb.dev_item.devid.get(),
            label,
            sys_chunk_array,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_wrong_magic_is_not_btrfs() {
        assert!(matches!(Superblock::parse(&[]), Err(ReadError::NotBtrfs)));
        assert!(matches!(
            Superblock::parse(&[0u8; 4096]),
            Err(ReadError::NotBtrfs)
        ));
    }

    #[test]
    fn bad_checksum_and_unsupported_checksum() {
        let mut sb = vec![0u8; 4096];
        let magic = std::mem::offset_of!(layout::SuperBlock, magic);
        sb[magic..magic + 8].copy_from_slice(&BTRFS_MAGIC);
        assert!(matches!(
            Superblock::parse(&sb),
            Err(ReadError::BadSuperblockChecksum)
        ));
        sb[0xc4] = BTRFS_CSUM_TYPE_SHA256 as u8;
        match Superblock::parse(&sb) {
            Err(ReadError::UnsupportedChecksum(name)) => assert_eq!(name, "sha256"),
            other => panic!("{other:?}"),
        }
    }
}
