//! The partition table on disk: GPT (protective MBR, header and entry
//! array with CRC-32s, the backup copy at the end) and MBR, written from
//! a [`Table`] and parsed back into one. Bytes in, bytes out.
//!
//! The GPT layout (UEFI 2.10 §5.3), in 512-byte sectors:
//! LBA 0 protective MBR; LBA 1 header; LBA 2–33 the 128 entries of 128
//! bytes; … partitions …; LBA N−33 to N−2 the backup entries; LBA N−1 the
//! backup header. Each structure is described once, in `table/layout.rs`.

mod error;
mod layout;

use serde::Serialize;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::hash::crc32;
use super::types::Guid;
pub use error::{GptCopy, TableError};
use layout::{
    GptEntry, GptHeader, Mbr, MbrPartition, BOOTABLE, GPT_NAME_UNITS, GPT_REVISION, GPT_SIGNATURE,
    MBR_SIGNATURE, MBR_TAIL, PROTECTIVE_TYPE,
};
pub use layout::{GPT_ENTRIES, MBR_ENTRIES, SECTOR};

const GPT_ENTRY_SIZE: u32 = size_of::<GptEntry>() as u32;
const GPT_HEADER_SIZE: u32 = size_of::<GptHeader>() as u32;
/// Sectors the entry array takes (128 × 128 / 512).
pub const GPT_ENTRY_SECTORS: u64 = (GPT_ENTRIES as u64 * GPT_ENTRY_SIZE as u64) / SECTOR;
/// The first sector a partition may use after the primary GPT (34).
pub const GPT_FIRST_USABLE: u64 = 2 + GPT_ENTRY_SECTORS;
/// Sectors the backup GPT takes at the end of the disk (33).
pub const GPT_BACKUP_SECTORS: u64 = 1 + GPT_ENTRY_SECTORS;

/// GPT or MBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table (UEFI).
    Gpt,
    /// MS-DOS master boot record.
    Mbr,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
        })
    }
}

/// A partition table as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// GPT or MBR.
    pub kind: TableKind,
    /// Size of the disk in sectors.
    pub total_sectors: u64,
    /// GPT disk GUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_guid: Option<Guid>,
    /// MBR disk identifier (the 4 bytes at offset 440).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<u32>,
    /// The partitions, by number.
    pub entries: Vec<Entry>,
}

/// One partition table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// 1-based: the N of `/dev/sdaN` (GPT: the entry's slot + 1).
    pub number: u32,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// GPT: the partition name (UTF-16 on disk, at most 36 units).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// GPT: the partition type GUID.
    pub type_guid: Option<Guid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// MBR: the partition type byte.
    pub mbr_type: Option<u8>,
    /// GPT: the partition's unique GUID (its PARTUUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<Guid>,
    /// GPT attribute bits.
    pub attributes: u64,
    /// MBR: the boot indicator (0x80).
    pub bootable: bool,
}

impl Entry {
    /// The sector after the last one.
    pub fn end(&self) -> u64 {
        self.start + self.sectors
    }
}

/// Bytes to write and where (byte offsets from the start of the disk).
pub type Writes = Vec<(u64, Vec<u8>)>;

impl Table {
    /// The bytes of the table: for GPT the protective MBR, the primary
    /// header and entries (LBA 0–33) and the backup (the last 33 sectors);
    /// for MBR sector 0's disk id, entries and signature, as a write of
    /// bytes 440–511 only, so that boot code already there (a raw blob at
    /// offset 0) is kept.
    pub fn to_bytes(&self) -> Result<Writes, TableError> {
        match self.kind {
            TableKind::Gpt => self.gpt_bytes(),
            TableKind::Mbr => Ok(vec![(MBR_TAIL as u64, self.mbr_tail(false)?)]),
        }
    }

    /// Bytes 440..512 of sector 0: disk id, entries, 0x55AA.
    fn mbr_tail(&self, protective: bool) -> Result<Vec<u8>, TableError> {
        let mut mbr = Mbr::new_zeroed();
        mbr.unique_mbr_disk_signature.set(self.disk_id.unwrap_or(0));
        mbr.signature = MBR_SIGNATURE;
        if protective {
            mbr.partition_record[0] = MbrPartition {
                boot_indicator: 0,
                // CHS 0/0/2 to the 1023/255/63 that means "past CHS".
                starting_chs: [0x00, 0x02, 0x00],
                os_type: PROTECTIVE_TYPE,
                ending_chs: [0xFF, 0xFF, 0xFF],
                starting_lba: 1.into(),
                size_in_lba: (self.total_sectors.saturating_sub(1).min(0xFFFF_FFFF) as u32).into(),
            };
        } else {
            if self.entries.len() > MBR_ENTRIES {
                return Err(TableError::TooManyMbrPartitions {
                    count: self.entries.len(),
                });
            }
            for (rec, e) in mbr.partition_record.iter_mut().zip(&self.entries) {
                *rec = mbr_record(e)?;
            }
        }
        Ok(mbr.as_bytes()[MBR_TAIL..].to_vec())
    }

    fn gpt_bytes(&self) -> Result<Writes, TableError> {
        if self.entries.len() > GPT_ENTRIES as usize {
            return Err(TableError::TooManyGptPartitions {
                count: self.entries.len(),
            });
        }
        let n = self.total_sectors;
        if n < GPT_FIRST_USABLE + GPT_BACKUP_SECTORS + 1 {
            return Err(TableError::DiskTooSmall { sectors: n });
        }
        let mut array = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
        let slots = <[GptEntry]>::mut_from_bytes(&mut array).expect("whole entries");
        for e in &self.entries {
            let slot = e
                .number
                .checked_sub(1)
                .filter(|&s| s < GPT_ENTRIES)
                .ok_or(TableError::PartitionNumber { number: e.number })?;
            slots[slot as usize] = gpt_entry(e)?;
        }
        let array_crc = crc32(&array);
        let header = |current: u64, backup: u64, entries_lba: u64| {
            let mut h = GptHeader {
                signature: GPT_SIGNATURE,
                revision: GPT_REVISION.into(),
                header_size: GPT_HEADER_SIZE.into(),
                header_crc32: 0.into(),
                reserved: 0.into(),
                my_lba: current.into(),
                alternate_lba: backup.into(),
                first_usable_lba: GPT_FIRST_USABLE.into(),
                last_usable_lba: (n - GPT_BACKUP_SECTORS - 1).into(),
                disk_guid: self.disk_guid.unwrap_or(Guid([0; 16])).to_disk(),
                partition_entry_lba: entries_lba.into(),
                number_of_partition_entries: GPT_ENTRIES.into(),
                size_of_partition_entry: GPT_ENTRY_SIZE.into(),
                partition_entry_array_crc32: array_crc.into(),
            };
            h.header_crc32.set(crc32(h.as_bytes()));
            let mut sector = h.as_bytes().to_vec();
            sector.resize(SECTOR as usize, 0);
            sector
        };
        let mut head = vec![0u8; (GPT_FIRST_USABLE * SECTOR) as usize];
        head[MBR_TAIL..SECTOR as usize].copy_from_slice(&self.mbr_tail(true)?);
        head[SECTOR as usize..2 * SECTOR as usize].copy_from_slice(&header(1, n - 1, 2));
        head[2 * SECTOR as usize..].copy_from_slice(&array);
        let mut tail = array;
        tail.extend(header(n - 1, 1, n - GPT_BACKUP_SECTORS));
        Ok(vec![(0, head), ((n - GPT_BACKUP_SECTORS) * SECTOR, tail)])
    }

    /// Reads a table back: `head` is the start of the disk (at least
    /// 34 sectors for GPT, 1 for MBR), `tail` its last 33 sectors,
    /// `disk_bytes` its size. GPT headers and arrays must carry valid
    /// CRC-32s and the backup must agree with the primary.
    pub fn parse(head: &[u8], tail: &[u8], disk_bytes: u64) -> Result<Table, TableError> {
        let mbr = head
            .get(..SECTOR as usize)
            .and_then(|s| Mbr::ref_from_bytes(s).ok())
            .filter(|m| m.signature == MBR_SIGNATURE)
            .ok_or(TableError::NoMbrSignature)?;
        if disk_bytes % SECTOR != 0 {
            return Err(TableError::NotWholeSectors { bytes: disk_bytes });
        }
        let total = disk_bytes / SECTOR;
        let mbr = parse_mbr(mbr, total)?;
        if mbr.entries.first().and_then(|e| e.mbr_type) == Some(PROTECTIVE_TYPE) {
            parse_gpt(head, tail, total)
        } else {
            Ok(mbr)
        }
    }
}

/// The MBR record of a partition.
fn mbr_record(e: &Entry) -> Result<MbrPartition, TableError> {
    let os_type = e
        .mbr_type
        .ok_or(TableError::NoMbrType { number: e.number })?;
    if e.end() > 0xFFFF_FFFF {
        return Err(TableError::PastMbrLimit { number: e.number });
    }
    Ok(MbrPartition {
        boot_indicator: if e.bootable { BOOTABLE } else { 0 },
        starting_chs: chs(e.start),
        os_type,
        ending_chs: chs(e.start + e.sectors - 1),
        starting_lba: (e.start as u32).into(),
        size_in_lba: (e.sectors as u32).into(),
    })
}

/// The GPT entry of a partition.
fn gpt_entry(e: &Entry) -> Result<GptEntry, TableError> {
    let t = e
        .type_guid
        .ok_or(TableError::NoGptType { number: e.number })?;
    let units: Vec<u16> = e.name.encode_utf16().collect();
    if units.len() > GPT_NAME_UNITS {
        return Err(TableError::NameTooLong {
            number: e.number,
            name: e.name.clone(),
        });
    }
    let mut d = GptEntry::new_zeroed();
    d.partition_type_guid = t.to_disk();
    d.unique_partition_guid = e.guid.unwrap_or(Guid([0; 16])).to_disk();
    d.starting_lba.set(e.start);
    d.ending_lba.set(e.end() - 1);
    d.attributes.set(e.attributes);
    for (slot, u) in d.partition_name.iter_mut().zip(units) {
        slot.set(u);
    }
    Ok(d)
}

/// CHS of an LBA with the usual 255 heads × 63 sectors geometry; past
/// cylinder 1023, the 1023/254/63 every tool writes.
fn chs(lba: u64) -> [u8; 3] {
    let (c, h, s) = if lba >= 1024 * 255 * 63 {
        (1023, 254, 63)
    } else {
        (lba / (255 * 63), (lba / 63) % 255, lba % 63 + 1)
    };
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

fn parse_mbr(mbr: &Mbr, total: u64) -> Result<Table, TableError> {
    let mut entries = Vec::new();
    for (i, e) in mbr.partition_record.iter().enumerate() {
        if e.os_type == 0 {
            continue;
        }
        if e.boot_indicator != 0 && e.boot_indicator != BOOTABLE {
            return Err(TableError::BootIndicator {
                index: i + 1,
                value: e.boot_indicator,
            });
        }
        entries.push(Entry {
            number: i as u32 + 1,
            start: u64::from(e.starting_lba.get()),
            sectors: u64::from(e.size_in_lba.get()),
            name: String::new(),
            type_guid: None,
            mbr_type: Some(e.os_type),
            guid: None,
            attributes: 0,
            bootable: e.boot_indicator == BOOTABLE,
        });
    }
    Ok(Table {
        kind: TableKind::Mbr,
        total_sectors: total,
        disk_guid: None,
        disk_id: Some(mbr.unique_mbr_disk_signature.get()),
        entries,
    })
}

/// The header in `sector`, its signature, size and CRC-32 checked.
fn parse_header(sector: &[u8], which: GptCopy) -> Result<GptHeader, TableError> {
    let (h, _) = GptHeader::read_from_prefix(sector).map_err(|_| TableError::TooShort { which })?;
    if h.signature != GPT_SIGNATURE {
        return Err(TableError::BadSignature { which });
    }
    let size = h.header_size.get();
    if !(GPT_HEADER_SIZE..=SECTOR as u32).contains(&size) || sector.len() < size as usize {
        return Err(TableError::HeaderSize { which, size });
    }
    let mut copy = sector[..size as usize].to_vec();
    copy[std::mem::offset_of!(GptHeader, header_crc32)..][..4].fill(0);
    let got = crc32(&copy);
    if got != h.header_crc32.get() {
        return Err(TableError::HeaderChecksum {
            which,
            expected: h.header_crc32.get(),
            got,
        });
    }
    Ok(h)
}

/// The array of `len` bytes at `at` in `bytes`, its CRC-32 checked
/// against `h`.
fn entry_array<'a>(
    bytes: &'a [u8],
    at: Option<usize>,
    len: usize,
    h: &GptHeader,
    which: GptCopy,
) -> Result<&'a [u8], TableError> {
    let lba = h.partition_entry_lba.get();
    let array = at
        .and_then(|at| bytes.get(at..at.checked_add(len)?))
        .ok_or(TableError::EntriesMisplaced { which, lba })?;
    let got = crc32(array);
    if got != h.partition_entry_array_crc32.get() {
        return Err(TableError::EntriesChecksum {
            which,
            expected: h.partition_entry_array_crc32.get(),
            got,
        });
    }
    Ok(array)
}

fn parse_gpt(head: &[u8], tail: &[u8], total: u64) -> Result<Table, TableError> {
    let s = SECTOR as usize;
    let last = total - 1;
    let primary = head.get(s..2 * s).ok_or(TableError::TooShort {
        which: GptCopy::Primary,
    })?;
    let h = parse_header(primary, GptCopy::Primary)?;
    if h.my_lba.get() != 1 || h.alternate_lba.get() != last {
        return Err(TableError::HeaderLocation {
            which: GptCopy::Primary,
            current: h.my_lba.get(),
            alternate: h.alternate_lba.get(),
            last,
        });
    }
    let (count, size) = (
        h.number_of_partition_entries.get(),
        h.size_of_partition_entry.get(),
    );
    if size != GPT_ENTRY_SIZE || count == 0 || count > 1024 {
        return Err(TableError::EntryArrayShape { count, size });
    }
    let len = (count * size) as usize;
    let at = usize::try_from(h.partition_entry_lba.get())
        .ok()
        .and_then(|l| l.checked_mul(s));
    let array = entry_array(head, at, len, &h, GptCopy::Primary)?;
    // The backup: header in the last sector, its array just before.
    if tail.len() < s + len {
        return Err(TableError::TooShort {
            which: GptCopy::Backup,
        });
    }
    let b = parse_header(&tail[tail.len() - s..], GptCopy::Backup)?;
    if b.my_lba.get() != last || b.alternate_lba.get() != 1 {
        return Err(TableError::HeaderLocation {
            which: GptCopy::Backup,
            current: b.my_lba.get(),
            alternate: b.alternate_lba.get(),
            last,
        });
    }
    let tail_start = total - (tail.len() / s) as u64;
    let boff = b
        .partition_entry_lba
        .get()
        .checked_sub(tail_start)
        .and_then(|x| usize::try_from(x).ok()?.checked_mul(s))
        .filter(|&o| o + len <= tail.len());
    let barray = entry_array(tail, boff, len, &b, GptCopy::Backup)?;
    if barray != array {
        return Err(TableError::BackupEntriesDiffer);
    }
    if b.disk_guid != h.disk_guid
        || b.first_usable_lba != h.first_usable_lba
        || b.last_usable_lba != h.last_usable_lba
    {
        return Err(TableError::BackupHeaderDiffers);
    }
    let slots = <[GptEntry]>::ref_from_bytes(array).expect("whole entries");
    let entries = slots
        .iter()
        .enumerate()
        .filter(|(_, d)| d.partition_type_guid != [0; 16])
        .map(|(i, d)| read_entry(i, d, &h))
        .collect::<Result<_, _>>()?;
    Ok(Table {
        kind: TableKind::Gpt,
        total_sectors: total,
        disk_guid: Some(Guid::from_disk(h.disk_guid)),
        disk_id: None,
        entries,
    })
}

/// The entry in slot `i`, its sectors checked against the header's
/// usable range.
fn read_entry(i: usize, d: &GptEntry, h: &GptHeader) -> Result<Entry, TableError> {
    let (first, last) = (d.starting_lba.get(), d.ending_lba.get());
    let (first_usable, last_usable) = (h.first_usable_lba.get(), h.last_usable_lba.get());
    if last < first || first < first_usable || last > last_usable {
        return Err(TableError::EntryOutOfRange {
            index: i + 1,
            first,
            last,
            first_usable,
            last_usable,
        });
    }
    let units: Vec<u16> = d
        .partition_name
        .iter()
        .map(|u| u.get())
        .take_while(|&u| u != 0)
        .collect();
    let guid = Guid::from_disk(d.unique_partition_guid);
    Ok(Entry {
        number: i as u32 + 1,
        start: first,
        sectors: last - first + 1,
        name: String::from_utf16_lossy(&units),
        type_guid: Some(Guid::from_disk(d.partition_type_guid)),
        mbr_type: None,
        guid: (!guid.is_zero()).then_some(guid),
        attributes: d.attributes.get(),
        bootable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(t: &Table) -> Vec<u8> {
        let mut d = vec![0u8; (t.total_sectors * SECTOR) as usize];
        for (o, b) in t.to_bytes().unwrap() {
            d[o as usize..o as usize + b.len()].copy_from_slice(&b);
        }
        d
    }

    fn parse(d: &[u8]) -> Result<Table, TableError> {
        let head = &d[..(GPT_FIRST_USABLE * SECTOR) as usize];
        let tail = &d[d.len() - (GPT_BACKUP_SECTORS * SECTOR) as usize..];
        Table::parse(head, tail, d.len() as u64)
    }

    fn gpt() -> Table {
        Table {
            kind: TableKind::Gpt,
            total_sectors: 8192,
            disk_guid: Some("11111111-2222-4333-8444-555555555555".parse().unwrap()),
            disk_id: None,
            entries: vec![
                Entry {
                    number: 1,
                    start: 2048,
                    sectors: 2048,
                    name: "ESP".into(),
                    type_guid: Some("C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap()),
                    mbr_type: None,
                    guid: Some("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE".parse().unwrap()),
                    attributes: 1 << 2,
                    bootable: false,
                },
                Entry {
                    number: 2,
                    start: 4096,
                    sectors: 8192 - 4096 - 33,
                    name: "root ünï".into(),
                    type_guid: Some("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".parse().unwrap()),
                    mbr_type: None,
                    guid: Some("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEF".parse().unwrap()),
                    attributes: 1 << 60,
                    bootable: false,
                },
            ],
        }
    }

    #[test]
    fn a_gpt_reads_back_as_written() {
        let t = gpt();
        let d = disk(&t);
        assert_eq!(parse(&d).unwrap(), t);
        // The protective MBR covers the disk.
        assert_eq!(d[446 + 4], 0xEE);
        assert_eq!(d[446 + 12..446 + 16], 8191u32.to_le_bytes());
    }

    #[test]
    fn a_damaged_gpt_is_refused() {
        let d = disk(&gpt());
        let header = |which| TableError::HeaderChecksum {
            which,
            expected: 0,
            got: 0,
        };
        let entries = |which| TableError::EntriesChecksum {
            which,
            expected: 0,
            got: 0,
        };
        for (at, what, want) in [
            (512 + 40, "header", header(GptCopy::Primary)),
            (1024 + 5, "array", entries(GptCopy::Primary)),
            (d.len() - 512 + 40, "backup header", header(GptCopy::Backup)),
            (
                d.len() - 512 - 16 * 1024 + 3,
                "backup array",
                entries(GptCopy::Backup),
            ),
            (
                512,
                "signature",
                TableError::BadSignature {
                    which: GptCopy::Primary,
                },
            ),
            (510, "0x55AA", TableError::NoMbrSignature),
        ] {
            let mut bad = d.clone();
            bad[at] ^= 1;
            let err = parse(&bad).expect_err(what);
            assert_eq!(
                std::mem::discriminant(&err),
                std::mem::discriminant(&want),
                "a flipped bit in the {what}: {err}"
            );
            if let (
                TableError::HeaderChecksum { which, .. }
                | TableError::EntriesChecksum { which, .. },
                TableError::HeaderChecksum { which: w, .. }
                | TableError::EntriesChecksum { which: w, .. },
            ) = (&err, &want)
            {
                assert_eq!(which, w, "{what}: {err}");
            }
        }
    }

    #[test]
    fn an_entry_outside_the_usable_sectors_is_named() {
        let mut t = gpt();
        t.entries[1].sectors += 1;
        let err = parse(&disk(&t)).unwrap_err();
        assert_eq!(
            err,
            TableError::EntryOutOfRange {
                index: 2,
                first: 4096,
                last: 8192 - 33,
                first_usable: 34,
                last_usable: 8192 - 34,
            }
        );
    }

    /// Writes `t`'s headers again with `edit` applied and their CRC-32s
    /// computed, so the parse reaches the fields after the checksum.
    fn with_headers(d: &mut [u8], edit: impl Fn(&mut GptHeader)) {
        let n = d.len();
        for at in [512, n - 512] {
            let h = GptHeader::mut_from_prefix(&mut d[at..]).unwrap().0;
            edit(h);
            h.header_crc32.set(0);
            let crc = crc32(h.as_bytes());
            h.header_crc32.set(crc);
        }
    }

    #[test]
    fn hostile_headers_and_short_disks_give_errors_not_panics() {
        let d = disk(&gpt());
        type Edit = fn(&mut GptHeader);
        let edits: [(&str, Edit); 4] = [
            ("entries far away", |h| {
                h.partition_entry_lba.set(u64::MAX / 2)
            }),
            ("no entries", |h| h.number_of_partition_entries.set(0)),
            ("huge entries", |h| h.size_of_partition_entry.set(u32::MAX)),
            ("header size 0", |h| h.header_size.set(0)),
        ];
        for (what, edit) in edits {
            let mut bad = d.clone();
            with_headers(&mut bad, edit);
            assert!(parse(&bad).is_err(), "{what}");
        }
        // Every cut of the head and tail a caller could pass.
        let head = &d[..(GPT_FIRST_USABLE * SECTOR) as usize];
        let tail = &d[d.len() - (GPT_BACKUP_SECTORS * SECTOR) as usize..];
        for cut in (1..head.len()).step_by(61) {
            assert!(Table::parse(&head[..cut], tail, d.len() as u64).is_err());
        }
        for cut in (1..tail.len()).step_by(61) {
            assert!(Table::parse(head, &tail[cut..], d.len() as u64).is_err());
        }
        assert_eq!(
            Table::parse(head, tail, d.len() as u64 + 1),
            Err(TableError::NotWholeSectors {
                bytes: d.len() as u64 + 1
            })
        );
    }

    #[test]
    fn an_mbr_reads_back_as_written_and_keeps_boot_code() {
        let t = Table {
            kind: TableKind::Mbr,
            total_sectors: 100_000,
            disk_guid: None,
            disk_id: Some(0x2178_694e),
            entries: vec![
                Entry {
                    number: 1,
                    start: 16384,
                    sectors: 61440,
                    name: String::new(),
                    type_guid: None,
                    mbr_type: Some(0x0B),
                    guid: None,
                    attributes: 0,
                    bootable: true,
                },
                Entry {
                    number: 2,
                    start: 77824,
                    sectors: 100_000 - 77824,
                    name: String::new(),
                    type_guid: None,
                    mbr_type: Some(0x83),
                    guid: None,
                    attributes: 0,
                    bootable: false,
                },
            ],
        };
        let writes = t.to_bytes().unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, 440, "boot code (bytes 0-439) is left alone");
        let mut d = vec![0xCCu8; 512];
        d[440..512].copy_from_slice(&writes[0].1);
        assert_eq!(Table::parse(&d, &[], 100_000 * 512).unwrap(), t);
        assert!(d[..440].iter().all(|&b| b == 0xCC));
    }

    /// Every write of `t`, with its offset, in one SHA-256.
    fn writes_sha256(t: &Table) -> String {
        use crate::disk::hash::{hex, Digest, Sha256};
        let mut h = Sha256::new();
        for (o, b) in t.to_bytes().unwrap() {
            h.update(o.to_le_bytes());
            h.update(&b);
        }
        hex(&h.finalize())
    }

    #[test]
    fn the_bytes_of_a_known_table_are_pinned() {
        // Computed before the table moved to zerocopy structs and
        // crc32fast: the writer's output must not change by a byte.
        assert_eq!(
            writes_sha256(&gpt()),
            "7f52c06b2eb27774a79d379e2f8aa2503edb1353987670287b665fbd4e16d969"
        );
        let mut mbr = gpt();
        mbr.kind = TableKind::Mbr;
        mbr.disk_id = Some(0x2178_694e);
        for (e, t) in mbr.entries.iter_mut().zip([0x0Bu8, 0x83]) {
            e.mbr_type = Some(t);
        }
        mbr.entries[0].bootable = true;
        assert_eq!(
            writes_sha256(&mbr),
            "67c43133f4e01a48eeb6f1415cfba557096c55b488e1769185c716bd913ffd7c"
        );
    }

    #[test]
    fn chs_follows_the_255_by_63_geometry() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u32::MAX as u64), [254, 0xFF, 0xFF]);
    }
}
