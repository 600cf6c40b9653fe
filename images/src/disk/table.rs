//! The partition table on disk: GPT (protective MBR, header and entry
//! array with CRC-32s, the backup copy at the end) and MBR, written from
//! a [`Table`] and parsed back into one. Bytes in, bytes out.
//!
//! The GPT layout (UEFI 2.10 §5.3), in 512-byte sectors:
//! LBA 0 protective MBR; LBA 1 header; LBA 2–33 the 128 entries of 128
//! bytes; … partitions …; LBA N−33 to N−2 the backup entries; LBA N−1 the
//! backup header.

use serde::Serialize;

use super::hash::crc32;
use super::types::Guid;

/// Bytes per sector: what every SD card, eMMC and disk image tool here
/// assumes.
pub const SECTOR: u64 = 512;
/// GPT entries rootbox writes (the usual, and the minimum the UEFI
/// specification allows for the array's size: 16 KiB).
pub const GPT_ENTRIES: u32 = 128;
const GPT_ENTRY_SIZE: u32 = 128;
const GPT_HEADER_SIZE: u32 = 92;
/// Sectors the entry array takes (128 × 128 / 512).
pub const GPT_ENTRY_SECTORS: u64 = (GPT_ENTRIES as u64 * GPT_ENTRY_SIZE as u64) / SECTOR;
/// The first sector a partition may use after the primary GPT (34).
pub const GPT_FIRST_USABLE: u64 = 2 + GPT_ENTRY_SECTORS;
/// Sectors the backup GPT takes at the end of the disk (33).
pub const GPT_BACKUP_SECTORS: u64 = 1 + GPT_ENTRY_SECTORS;
/// MBR primary partitions.
pub const MBR_ENTRIES: usize = 4;

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

/// A table that cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{0}")]
    /// What is wrong, in words.
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> TableError {
    TableError::Invalid(s.into())
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
            TableKind::Mbr => Ok(vec![(440, self.mbr_tail(false)?)]),
        }
    }

    /// Bytes 440..512 of sector 0: disk id, entries, 0x55AA.
    fn mbr_tail(&self, protective: bool) -> Result<Vec<u8>, TableError> {
        let mut b = vec![0u8; 72];
        b[0..4].copy_from_slice(&self.disk_id.unwrap_or(0).to_le_bytes());
        let entries: Vec<(bool, u8, u64, u64)> = if protective {
            vec![(
                false,
                0xEE,
                1,
                self.total_sectors.saturating_sub(1).min(0xFFFF_FFFF),
            )]
        } else {
            if self.entries.len() > MBR_ENTRIES {
                return Err(invalid(format!(
                    "an MBR holds at most {MBR_ENTRIES} partitions, {} are given: use \"table\": \"gpt\"",
                    self.entries.len()
                )));
            }
            self.entries
                .iter()
                .map(|e| {
                    let t = e.mbr_type.ok_or_else(|| {
                        invalid(format!("partition {}: no MBR type", e.number))
                    })?;
                    if e.end() > 0xFFFF_FFFF {
                        return Err(invalid(format!(
                            "partition {} ends past 2 TiB, which an MBR cannot address: use \"table\": \"gpt\"",
                            e.number
                        )));
                    }
                    Ok((e.bootable, t, e.start, e.sectors))
                })
                .collect::<Result<_, _>>()?
        };
        for (i, (boot, t, start, n)) in entries.into_iter().enumerate() {
            let o = 6 + 16 * i;
            let e = &mut b[o..o + 16];
            e[0] = if boot { 0x80 } else { 0 };
            if t == 0xEE {
                e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
                e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
            } else {
                e[1..4].copy_from_slice(&chs(start));
                e[5..8].copy_from_slice(&chs(start + n - 1));
            }
            e[4] = t;
            e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(n as u32).to_le_bytes());
        }
        b[70] = 0x55;
        b[71] = 0xAA;
        Ok(b)
    }

    fn gpt_bytes(&self) -> Result<Writes, TableError> {
        if self.entries.len() > GPT_ENTRIES as usize {
            return Err(invalid(format!(
                "a GPT holds at most {GPT_ENTRIES} partitions, {} are given",
                self.entries.len()
            )));
        }
        let n = self.total_sectors;
        if n < GPT_FIRST_USABLE + GPT_BACKUP_SECTORS + 1 {
            return Err(invalid(format!("a GPT disk needs more than {n} sectors")));
        }
        let mut array = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
        for e in &self.entries {
            let slot = e
                .number
                .checked_sub(1)
                .filter(|&s| s < GPT_ENTRIES)
                .ok_or_else(|| {
                    invalid(format!(
                        "partition number {} is not 1-{GPT_ENTRIES}",
                        e.number
                    ))
                })? as usize;
            let o = slot * GPT_ENTRY_SIZE as usize;
            let d = &mut array[o..o + GPT_ENTRY_SIZE as usize];
            let t = e
                .type_guid
                .ok_or_else(|| invalid(format!("partition {}: no GPT type", e.number)))?;
            d[0..16].copy_from_slice(&t.to_disk());
            d[16..32].copy_from_slice(&e.guid.unwrap_or(Guid([0; 16])).to_disk());
            d[32..40].copy_from_slice(&e.start.to_le_bytes());
            d[40..48].copy_from_slice(&(e.end() - 1).to_le_bytes());
            d[48..56].copy_from_slice(&e.attributes.to_le_bytes());
            let name: Vec<u16> = e.name.encode_utf16().collect();
            if name.len() > 36 {
                return Err(invalid(format!(
                    "partition {}: the name {:?} is longer than a GPT entry holds (36 UTF-16 units)",
                    e.number, e.name
                )));
            }
            for (i, u) in name.iter().enumerate() {
                d[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        let array_crc = crc32(&array);
        let header = |current: u64, backup: u64, entries_lba: u64| {
            let mut h = vec![0u8; SECTOR as usize];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&GPT_HEADER_SIZE.to_le_bytes());
            h[24..32].copy_from_slice(&current.to_le_bytes());
            h[32..40].copy_from_slice(&backup.to_le_bytes());
            h[40..48].copy_from_slice(&GPT_FIRST_USABLE.to_le_bytes());
            h[48..56].copy_from_slice(&(n - GPT_BACKUP_SECTORS - 1).to_le_bytes());
            h[56..72].copy_from_slice(&self.disk_guid.unwrap_or(Guid([0; 16])).to_disk());
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&GPT_ENTRIES.to_le_bytes());
            h[84..88].copy_from_slice(&GPT_ENTRY_SIZE.to_le_bytes());
            h[88..92].copy_from_slice(&array_crc.to_le_bytes());
            let crc = crc32(&h[..GPT_HEADER_SIZE as usize]);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let mut head = vec![0u8; (GPT_FIRST_USABLE * SECTOR) as usize];
        head[440..512].copy_from_slice(&self.mbr_tail(true)?);
        head[512..1024].copy_from_slice(&header(1, n - 1, 2));
        head[1024..].copy_from_slice(&array);
        let mut tail = array;
        tail.extend(header(n - 1, 1, n - GPT_BACKUP_SECTORS));
        Ok(vec![(0, head), ((n - GPT_BACKUP_SECTORS) * SECTOR, tail)])
    }

    /// Reads a table back: `head` is the start of the disk (at least
    /// 34 sectors for GPT, 1 for MBR), `tail` its last 33 sectors,
    /// `disk_bytes` its size. GPT headers and arrays must carry valid
    /// CRC-32s and the backup must agree with the primary.
    pub fn parse(head: &[u8], tail: &[u8], disk_bytes: u64) -> Result<Table, TableError> {
        if head.len() < SECTOR as usize || head[510..512] != [0x55, 0xAA] {
            return Err(invalid(
                "sector 0 has no 0x55AA signature: no partition table",
            ));
        }
        if disk_bytes % SECTOR != 0 {
            return Err(invalid(format!(
                "the disk is {disk_bytes} bytes, not a whole number of {SECTOR}-byte sectors"
            )));
        }
        let total = disk_bytes / SECTOR;
        let mbr = parse_mbr(head, total)?;
        if mbr.entries.first().and_then(|e| e.mbr_type) == Some(0xEE) {
            parse_gpt(head, tail, total)
        } else {
            Ok(mbr)
        }
    }
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

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn parse_mbr(s0: &[u8], total: u64) -> Result<Table, TableError> {
    let mut entries = Vec::new();
    for i in 0..MBR_ENTRIES {
        let e = &s0[446 + 16 * i..462 + 16 * i];
        let (start, n) = (le32(e, 8) as u64, le32(e, 12) as u64);
        if e[4] == 0 {
            continue;
        }
        if e[0] != 0 && e[0] != 0x80 {
            return Err(invalid(format!(
                "MBR entry {}: boot indicator 0x{:02x} is neither 0 nor 0x80",
                i + 1,
                e[0]
            )));
        }
        entries.push(Entry {
            number: i as u32 + 1,
            start,
            sectors: n,
            name: String::new(),
            type_guid: None,
            mbr_type: Some(e[4]),
            guid: None,
            attributes: 0,
            bootable: e[0] == 0x80,
        });
    }
    Ok(Table {
        kind: TableKind::Mbr,
        total_sectors: total,
        disk_guid: None,
        disk_id: Some(le32(s0, 440)),
        entries,
    })
}

struct GptHeader {
    current: u64,
    backup: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    array_crc: u32,
}

fn parse_header(h: &[u8], which: &str) -> Result<GptHeader, TableError> {
    if &h[0..8] != b"EFI PART" {
        return Err(invalid(format!(
            "the {which} GPT header has no \"EFI PART\" signature"
        )));
    }
    let size = le32(h, 12) as usize;
    if !(92..=512).contains(&size) {
        return Err(invalid(format!(
            "the {which} GPT header claims {size} bytes"
        )));
    }
    let mut copy = h[..size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(h, 16) {
        return Err(invalid(format!("the {which} GPT header's CRC-32 is wrong")));
    }
    Ok(GptHeader {
        current: le64(h, 24),
        backup: le64(h, 32),
        first_usable: le64(h, 40),
        last_usable: le64(h, 48),
        disk_guid: Guid::from_disk(h[56..72].try_into().expect("16")),
        entries_lba: le64(h, 72),
        count: le32(h, 80),
        entry_size: le32(h, 84),
        array_crc: le32(h, 88),
    })
}

fn parse_gpt(head: &[u8], tail: &[u8], total: u64) -> Result<Table, TableError> {
    let s = SECTOR as usize;
    if head.len() < 2 * s {
        return Err(invalid("the disk is too short for a GPT header"));
    }
    let h = parse_header(&head[s..2 * s], "primary")?;
    if h.current != 1 || h.backup != total - 1 {
        return Err(invalid(format!(
            "the primary GPT header says it is at LBA {} with its backup at {}; the disk's last LBA is {}",
            h.current,
            h.backup,
            total - 1
        )));
    }
    if h.entry_size != GPT_ENTRY_SIZE || h.count == 0 || h.count > 1024 {
        return Err(invalid(format!(
            "GPT entry array of {} entries of {} bytes is not one rootbox reads",
            h.count, h.entry_size
        )));
    }
    let len = (h.count * h.entry_size) as usize;
    let at = h.entries_lba as usize * s;
    let array = head.get(at..at + len).ok_or_else(|| {
        invalid(format!(
            "the GPT entry array at LBA {} lies past the {} bytes read",
            h.entries_lba,
            head.len()
        ))
    })?;
    if crc32(array) != h.array_crc {
        return Err(invalid("the primary GPT entry array's CRC-32 is wrong"));
    }
    // The backup: header in the last sector, its array just before.
    if tail.len() < s + len {
        return Err(invalid("the disk is too short for a backup GPT"));
    }
    let b = parse_header(&tail[tail.len() - s..], "backup")?;
    if b.current != total - 1 || b.backup != 1 {
        return Err(invalid(format!(
            "the backup GPT header says it is at LBA {}, not the disk's last LBA {}",
            b.current,
            total - 1
        )));
    }
    let tail_start = total - (tail.len() / s) as u64;
    let boff = b
        .entries_lba
        .checked_sub(tail_start)
        .map(|x| x as usize * s)
        .filter(|&o| o + len <= tail.len())
        .ok_or_else(|| {
            invalid("the backup GPT entry array is not just before the backup header")
        })?;
    let barray = &tail[boff..boff + len];
    if crc32(barray) != b.array_crc || barray != array {
        return Err(invalid(
            "the backup GPT entry array differs from the primary",
        ));
    }
    if b.disk_guid != h.disk_guid
        || b.first_usable != h.first_usable
        || b.last_usable != h.last_usable
    {
        return Err(invalid("the backup GPT header differs from the primary"));
    }
    let mut entries = Vec::new();
    for (i, d) in array.chunks_exact(GPT_ENTRY_SIZE as usize).enumerate() {
        let t = Guid::from_disk(d[0..16].try_into().expect("16"));
        if t.is_zero() {
            continue;
        }
        let (first, last) = (le64(d, 32), le64(d, 40));
        if last < first || first < h.first_usable || last > h.last_usable {
            return Err(invalid(format!(
                "GPT entry {}: sectors {first}-{last} lie outside the usable {}-{}",
                i + 1,
                h.first_usable,
                h.last_usable
            )));
        }
        let units: Vec<u16> = d[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let guid = Guid::from_disk(d[16..32].try_into().expect("16"));
        entries.push(Entry {
            number: i as u32 + 1,
            start: first,
            sectors: last - first + 1,
            name: String::from_utf16_lossy(&units),
            type_guid: Some(t),
            mbr_type: None,
            guid: (!guid.is_zero()).then_some(guid),
            attributes: le64(d, 48),
            bootable: false,
        });
    }
    Ok(Table {
        kind: TableKind::Gpt,
        total_sectors: total,
        disk_guid: Some(h.disk_guid),
        disk_id: None,
        entries,
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
        assert_eq!(le32(&d, 446 + 12), 8191);
    }

    #[test]
    fn a_damaged_gpt_is_refused() {
        let d = disk(&gpt());
        for (at, what) in [
            (512 + 40, "header"),
            (1024 + 5, "array"),
            (d.len() - 512 + 40, "backup header"),
            (d.len() - 512 - 16 * 1024 + 3, "backup array"),
        ] {
            let mut bad = d.clone();
            bad[at] ^= 1;
            assert!(
                parse(&bad).is_err(),
                "a flipped bit in the {what} went unnoticed"
            );
        }
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

    #[test]
    fn chs_follows_the_255_by_63_geometry() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u32::MAX as u64), [254, 0xFF, 0xFF]);
    }
}
