//! Why a partition table cannot be written or read: one variant per
//! fault, naming the partition, the copy and the numbers involved.

use super::layout::{GPT_ENTRIES, MBR_ENTRIES, SECTOR};

/// Which of a GPT's two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptCopy {
    /// The header at LBA 1 and its array.
    Primary,
    /// The header in the last sector and its array.
    Backup,
}

impl std::fmt::Display for GptCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GptCopy::Primary => "primary",
            GptCopy::Backup => "backup",
        })
    }
}

/// A table that cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// More partitions than an MBR holds.
    #[error(
        "an MBR holds at most {MBR_ENTRIES} partitions, {count} are given: use \"table\": \"gpt\""
    )]
    TooManyMbrPartitions {
        /// Partitions given.
        count: usize,
    },
    /// An MBR partition without a type byte.
    #[error("partition {number}: no MBR type")]
    NoMbrType {
        /// The partition.
        number: u32,
    },
    /// An MBR partition past the 32-bit sector limit.
    #[error(
        "partition {number} ends past 2 TiB, which an MBR cannot address: use \"table\": \"gpt\""
    )]
    PastMbrLimit {
        /// The partition.
        number: u32,
    },
    /// More partitions than the GPT entry array holds.
    #[error("a GPT holds at most {GPT_ENTRIES} partitions, {count} are given")]
    TooManyGptPartitions {
        /// Partitions given.
        count: usize,
    },
    /// A disk too small for the two GPT copies and one sector.
    #[error("a GPT disk needs more than {sectors} sectors")]
    DiskTooSmall {
        /// The disk's sectors.
        sectors: u64,
    },
    /// A GPT partition number outside the entry array.
    #[error("partition number {number} is not 1-{GPT_ENTRIES}")]
    PartitionNumber {
        /// The number.
        number: u32,
    },
    /// A GPT partition without a type GUID.
    #[error("partition {number}: no GPT type")]
    NoGptType {
        /// The partition.
        number: u32,
    },
    /// A GPT partition name longer than its entry holds.
    #[error(
        "partition {number}: the name {name:?} is longer than a GPT entry holds (36 UTF-16 units)"
    )]
    NameTooLong {
        /// The partition.
        number: u32,
        /// The name.
        name: String,
    },
    /// Sector 0 does not end in 0x55AA.
    #[error("sector 0 has no 0x55AA signature: no partition table")]
    NoMbrSignature,
    /// A disk whose size is not whole sectors.
    #[error("the disk is {bytes} bytes, not a whole number of {SECTOR}-byte sectors")]
    NotWholeSectors {
        /// The disk's size.
        bytes: u64,
    },
    /// An MBR record whose boot indicator is neither 0 nor 0x80.
    #[error("MBR entry {index}: boot indicator {value:#04x} is neither 0 nor 0x80")]
    BootIndicator {
        /// 1-based record.
        index: usize,
        /// The byte.
        value: u8,
    },
    /// A GPT header without "EFI PART".
    #[error("the {which} GPT header has no \"EFI PART\" signature")]
    BadSignature {
        /// Which copy.
        which: GptCopy,
    },
    /// A GPT header size outside 92–512 bytes.
    #[error("the {which} GPT header claims {size} bytes")]
    HeaderSize {
        /// Which copy.
        which: GptCopy,
        /// The claimed size.
        size: u32,
    },
    /// A GPT header whose CRC-32 is wrong.
    #[error("the {which} GPT header's CRC-32 is wrong (it says {expected:#010x}, its bytes give {got:#010x})")]
    HeaderChecksum {
        /// Which copy.
        which: GptCopy,
        /// The CRC-32 in the header.
        expected: u32,
        /// The CRC-32 of the bytes.
        got: u32,
    },
    /// A GPT header not where it says it is, or not pointing at the other.
    #[error("the {which} GPT header says it is at LBA {current} with its other copy at {alternate}; the disk's last LBA is {last}")]
    HeaderLocation {
        /// Which copy.
        which: GptCopy,
        /// Its `my_lba`.
        current: u64,
        /// Its `alternate_lba`.
        alternate: u64,
        /// The disk's last LBA.
        last: u64,
    },
    /// An entry array of a shape rootbox does not read.
    #[error("GPT entry array of {count} entries of {size} bytes is not one rootbox reads")]
    EntryArrayShape {
        /// Entries.
        count: u32,
        /// Bytes per entry.
        size: u32,
    },
    /// The disk is too short for the GPT (`which` copy).
    #[error("the disk is too short for the {which} GPT")]
    TooShort {
        /// Which copy.
        which: GptCopy,
    },
    /// The entry array does not lie where the caller's bytes are.
    #[error("the {which} GPT entry array at LBA {lba} lies outside the sectors read")]
    EntriesMisplaced {
        /// Which copy.
        which: GptCopy,
        /// Its `partition_entry_lba`.
        lba: u64,
    },
    /// An entry array whose CRC-32 is wrong.
    #[error("the {which} GPT entry array's CRC-32 is wrong (the header says {expected:#010x}, its bytes give {got:#010x})")]
    EntriesChecksum {
        /// Which copy.
        which: GptCopy,
        /// The CRC-32 in the header.
        expected: u32,
        /// The CRC-32 of the array.
        got: u32,
    },
    /// The backup entry array is not the primary's.
    #[error("the backup GPT entry array differs from the primary")]
    BackupEntriesDiffer,
    /// The backup header disagrees with the primary.
    #[error("the backup GPT header differs from the primary")]
    BackupHeaderDiffers,
    /// A GPT entry whose sectors lie outside the usable range.
    #[error("GPT entry {index}: sectors {first}-{last} lie outside the usable {first_usable}-{last_usable}")]
    EntryOutOfRange {
        /// 1-based slot.
        index: usize,
        /// Its first sector.
        first: u64,
        /// Its last sector.
        last: u64,
        /// The header's first usable sector.
        first_usable: u64,
        /// The header's last usable sector.
        last_usable: u64,
    },
}
