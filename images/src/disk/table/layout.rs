//! The partition table's on-disk structures, each described once: the
//! (protective or legacy) MBR sector, the GPT header and a GPT entry
//! (UEFI 2.10 §5.2–5.3). Little-endian `#[repr(C)]` structs with the
//! specification's field order; `zerocopy` checks they have no padding
//! and that any bytes are a value, and the assertions below pin their
//! sizes. The writer fills these structs and the parser views sectors as
//! them, so no offset is written down anywhere else.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes per sector: what every SD card, eMMC and disk image tool here
/// assumes.
pub const SECTOR: u64 = 512;
/// GPT entries rootbox writes (the usual, and the minimum the UEFI
/// specification allows for the array's size: 16 KiB).
pub const GPT_ENTRIES: u32 = 128;
/// MBR primary partitions.
pub const MBR_ENTRIES: usize = 4;

/// The 0x55AA at the end of sector 0.
pub(crate) const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// The GPT header's signature.
pub(crate) const GPT_SIGNATURE: [u8; 8] = *b"EFI PART";
/// GPT revision 1.0.
pub(crate) const GPT_REVISION: u32 = 0x0001_0000;
/// The MBR type of the protective MBR's one entry.
pub(crate) const PROTECTIVE_TYPE: u8 = 0xEE;
/// The boot indicator of a bootable MBR partition.
pub(crate) const BOOTABLE: u8 = 0x80;

/// One of an MBR's four partition records.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct MbrPartition {
    pub boot_indicator: u8,
    /// Head, sector (and cylinder bits 8–9), cylinder of the first sector.
    pub starting_chs: [u8; 3],
    pub os_type: u8,
    pub ending_chs: [u8; 3],
    pub starting_lba: U32,
    pub size_in_lba: U32,
}

/// Sector 0: boot code, then the legacy MBR's disk signature, partition
/// records and 0x55AA. rootbox writes from `unique_mbr_disk_signature`
/// on ([`MBR_TAIL`]), so boot code already in bytes 0–439 is kept.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Mbr {
    pub boot_code: [u8; 440],
    pub unique_mbr_disk_signature: U32,
    pub unknown: [u8; 2],
    pub partition_record: [MbrPartition; 4],
    pub signature: [u8; 2],
}

/// Byte offset in sector 0 where rootbox's MBR write starts.
pub(crate) const MBR_TAIL: usize = 440;

/// The GPT header (its first `header_size` bytes are checksummed; the
/// rest of its sector is zero).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct GptHeader {
    pub signature: [u8; 8],
    pub revision: U32,
    pub header_size: U32,
    /// CRC-32 of the header's `header_size` bytes, this field zero.
    pub header_crc32: U32,
    pub reserved: U32,
    pub my_lba: U64,
    pub alternate_lba: U64,
    pub first_usable_lba: U64,
    pub last_usable_lba: U64,
    /// Mixed-endian, as every GUID on disk ([`crate::disk::types::Guid`]).
    pub disk_guid: [u8; 16],
    pub partition_entry_lba: U64,
    pub number_of_partition_entries: U32,
    pub size_of_partition_entry: U32,
    pub partition_entry_array_crc32: U32,
}

/// Units of UTF-16 in a GPT entry's name.
pub(crate) const GPT_NAME_UNITS: usize = 36;

/// One GPT partition entry; an all-zero type GUID is an unused slot.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct GptEntry {
    pub partition_type_guid: [u8; 16],
    pub unique_partition_guid: [u8; 16],
    pub starting_lba: U64,
    /// Inclusive.
    pub ending_lba: U64,
    pub attributes: U64,
    /// UTF-16LE, NUL-padded.
    pub partition_name: [U16; GPT_NAME_UNITS],
}

const _: () = assert!(size_of::<MbrPartition>() == 16);
const _: () = assert!(size_of::<Mbr>() == 512);
const _: () = assert!(size_of::<GptHeader>() == 92);
const _: () = assert!(size_of::<GptEntry>() == 128);
