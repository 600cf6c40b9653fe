//! The superblock: where every tree starts.

use super::error::ReadError;
use super::format::*;

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

// Offsets inside `btrfs_super_block`.
const SB_FSID: usize = 0x20;
const SB_MAGIC: usize = 0x40;
const SB_DEV_ITEM: usize = 0xc9;
const SB_LABEL: usize = 0x12b;
const SB_METADATA_UUID: usize = 0x23b;
const SB_SYS_CHUNK_ARRAY: usize = 0x32b;

impl Superblock {
    /// Parse and verify the 4 KiB primary superblock.
    pub fn parse(buf: &[u8]) -> Result<Superblock, ReadError> {
        if buf.len() < BTRFS_SUPER_INFO_SIZE
            || buf.get(SB_MAGIC..SB_MAGIC + BTRFS_MAGIC.len()) != Some(&BTRFS_MAGIC[..])
        {
            return Err(ReadError::NotBtrfs);
        }
        let buf = &buf[..BTRFS_SUPER_INFO_SIZE];
        let mut r = Reader::at(buf, 0xc4, "superblock");
        let csum_type = ChecksumType::from_disk(r.u16()?)?;
        if !csum_type.verify(&buf[..BTRFS_CSUM_SIZE], &buf[BTRFS_CSUM_SIZE..])? {
            return Err(ReadError::BadSuperblockChecksum);
        }

        let mut r = Reader::at(buf, SB_FSID, "superblock");
        let fsid: [u8; BTRFS_UUID_SIZE] = r.array()?;
        let bytenr = r.u64()?;
        let _flags = r.u64()?;
        r.skip(BTRFS_MAGIC.len())?;
        let generation = r.u64()?;
        let root = r.u64()?;
        let chunk_root = r.u64()?;
        let _log_root = r.u64()?;
        let _log_root_transid = r.u64()?;
        let total_bytes = r.u64()?;
        let bytes_used = r.u64()?;
        let root_dir_objectid = r.u64()?;
        let num_devices = r.u64()?;
        let sectorsize = r.u32()?;
        let nodesize = r.u32()?;
        let _leafsize = r.u32()?;
        let _stripesize = r.u32()?;
        let sys_chunk_array_size = r.u32()? as usize;
        let chunk_root_generation = r.u64()?;
        let _compat_flags = r.u64()?;
        let compat_ro_flags = r.u64()?;
        let incompat_flags = r.u64()?;
        let _csum_type = r.u16()?;
        let root_level = r.u8()?;
        let chunk_root_level = r.u8()?;
        let _log_root_level = r.u8()?;

        // btrfs_dev_item of this device: devid is its first field.
        let devid = Reader::at(buf, SB_DEV_ITEM, "superblock dev_item").u64()?;
        let label_bytes = Reader::at(buf, SB_LABEL, "superblock label").bytes(BTRFS_LABEL_SIZE)?;
        let label_len = label_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(label_bytes.len());
        let label = String::from_utf8_lossy(&label_bytes[..label_len]).into_owned();
        let metadata_fsid = if incompat_flags & BTRFS_FEATURE_INCOMPAT_METADATA_UUID != 0 {
            Reader::at(buf, SB_METADATA_UUID, "superblock").array()?
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
        let sys_chunk_array = Reader::at(buf, SB_SYS_CHUNK_ARRAY, "superblock")
            .bytes(sys_chunk_array_size)?
            .to_vec();

        Ok(Superblock {
            fsid,
            metadata_fsid,
            generation,
            root,
            chunk_root,
            total_bytes,
            bytes_used,
            root_dir_objectid,
            num_devices,
            sectorsize,
            nodesize,
            chunk_root_generation,
            compat_ro_flags,
            incompat_flags,
            csum_type,
            root_level,
            chunk_root_level,
            devid,
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
        sb[SB_MAGIC..SB_MAGIC + 8].copy_from_slice(&BTRFS_MAGIC);
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
