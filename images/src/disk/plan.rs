//! Placing a disk: [`DiskSpec::plan`] puts the partitions and blobs
//! where the spec asks, once the runner knows how big each content is,
//! checking alignment, overlaps (partitions, blobs, the table itself) and
//! the end of the disk; [`DiskLayout`] is the result, and
//! [`DiskLayout::differences`] compares it with a table read back.

use serde::Serialize;

use super::error::{DiskError, LayoutError, Part};
use super::table::{Entry, Table, TableKind, GPT_BACKUP_SECTORS, GPT_FIRST_USABLE, SECTOR};
use super::types::{Guid, PartType};
use super::{DiskSpec, PartSize};
use crate::size::Size;

impl DiskSpec {
    /// Places the partitions. `content` is each partition's content size
    /// in bytes (0 for none), `blobs` each blob's size; `entropy(purpose)`
    /// gives 16 bytes for each GUID not fixed by the spec (random, or
    /// derived from a seed): purposes are `disk` and `partition N`.
    pub fn plan(
        &self,
        content: &[u64],
        blobs: &[u64],
        entropy: &mut dyn FnMut(&str) -> [u8; 16],
    ) -> Result<DiskLayout, DiskError> {
        let (first_usable, backup) = match self.table {
            TableKind::Gpt => (GPT_FIRST_USABLE, GPT_BACKUP_SECTORS),
            TableKind::Mbr => (1, 0),
        };
        let mut entries = self.place_entries(content, first_usable, entropy)?;
        let mut placed_blobs = Vec::new();
        for (b, &len) in self.blobs.iter().zip(blobs) {
            if let Some(max) = b.max_size.filter(|m| len > m.bytes()) {
                return Err(LayoutError::BlobTooLarge {
                    blob: b.title(),
                    len,
                    max,
                }
                .into());
            }
            placed_blobs.push(PlacedBlob {
                name: b.title(),
                offset: b.offset_bytes(),
                size: len,
            });
        }
        let content_end = entries
            .iter()
            .map(|e| e.end() * SECTOR)
            .chain(placed_blobs.iter().map(|b| b.offset + b.size))
            .max()
            .unwrap_or(first_usable * SECTOR);
        let total = match self.size {
            Size::Fixed(b) => b.bytes() / SECTOR,
            Size::Auto => content_end.div_ceil(SECTOR) + backup,
        };
        if total < first_usable + backup + 1 {
            let table = match self.table {
                TableKind::Gpt => "a GPT table",
                TableKind::Mbr => "an MBR table",
            };
            return Err(LayoutError::DiskTooSmall { total, table }.into());
        }
        self.fill_and_check_end(&mut entries, content, total, backup)?;
        self.check_overlaps(&entries, &placed_blobs, total, backup)?;
        let disk_guid = match self.table {
            TableKind::Gpt => Some(
                self.disk_guid
                    .unwrap_or_else(|| Guid::from_random(entropy("disk"))),
            ),
            TableKind::Mbr => None,
        };
        let disk_id = match self.table {
            TableKind::Mbr => Some(self.disk_id.map(|h| h.0).unwrap_or_else(|| {
                let b = entropy("disk id");
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(1)
            })),
            TableKind::Gpt => None,
        };
        Ok(DiskLayout {
            table: Table {
                kind: self.table,
                total_sectors: total,
                disk_guid,
                disk_id,
                entries,
            },
            names: self.partitions.iter().map(|p| p.name.clone()).collect(),
            blobs: placed_blobs,
        })
    }

    /// Each partition's start and size (a `fill` partition's size is 0
    /// until [`DiskSpec::fill_and_check_end`]), type and GUID.
    fn place_entries(
        &self,
        content: &[u64],
        first_usable: u64,
        entropy: &mut dyn FnMut(&str) -> [u8; 16],
    ) -> Result<Vec<Entry>, LayoutError> {
        let align = self.alignment.bytes() / SECTOR;
        let gpt = self.table == TableKind::Gpt;
        let mut entries = Vec::new();
        let mut cursor = first_usable;
        for (i, p) in self.partitions.iter().enumerate() {
            let partition = Part::of(self, i);
            let t: PartType = p.kind.parse().map_err(|source| LayoutError::UnknownType {
                partition: partition.clone(),
                source,
            })?;
            let size = content.get(i).copied().unwrap_or(0);
            let start = match p.start_sector.or(p.start.map(|s| s.bytes() / SECTOR)) {
                Some(start) if start % align != 0 => {
                    return Err(LayoutError::Misaligned {
                        partition,
                        start,
                        alignment: self.alignment,
                        sectors: align,
                    })
                }
                Some(s) => s,
                None => cursor.div_ceil(align) * align,
            };
            let sectors = match p.size {
                PartSize::Fixed(b) if size > b.bytes() => {
                    return Err(LayoutError::ContentTooLarge {
                        partition,
                        content: size,
                        size: b,
                    })
                }
                PartSize::Fixed(b) => b.bytes() / SECTOR,
                PartSize::Auto => (size + p.headroom.bytes())
                    .max(p.min_size.map_or(0, |m| m.bytes()))
                    .div_ceil(SECTOR)
                    .max(1),
                PartSize::Fill => 0,
            };
            cursor = start + sectors;
            let number = partition.number;
            entries.push(Entry {
                number,
                start,
                sectors,
                name: if gpt { p.name.clone() } else { String::new() },
                type_guid: if gpt { t.gpt } else { None },
                mbr_type: if gpt { None } else { t.mbr },
                guid: gpt.then(|| {
                    p.guid.unwrap_or_else(|| {
                        Guid::from_random(entropy(&format!("partition {number}")))
                    })
                }),
                attributes: p.attributes.iter().fold(0, |a, b| a | 1 << b.bit()),
                bootable: p.bootable,
            });
        }
        Ok(entries)
    }

    /// Sizes a last `fill` partition and checks that every partition ends
    /// before the backup GPT (or the end of an MBR disk).
    fn fill_and_check_end(
        &self,
        entries: &mut [Entry],
        content: &[u64],
        total: u64,
        backup: u64,
    ) -> Result<(), LayoutError> {
        let last_usable = total - backup; // exclusive
        let fills = self
            .partitions
            .last()
            .is_some_and(|p| p.size == PartSize::Fill);
        if let Some(e) = entries.last_mut().filter(|_| fills) {
            let partition = Part::of(self, e.number as usize - 1);
            if e.start >= last_usable {
                return Err(LayoutError::NothingToFill {
                    partition,
                    start: e.start,
                    last_usable,
                });
            }
            e.sectors = last_usable - e.start;
            let need = content.get(e.number as usize - 1).copied().unwrap_or(0);
            if need > e.sectors * SECTOR {
                return Err(LayoutError::FillTooSmall {
                    partition,
                    content: need,
                    left: e.sectors * SECTOR,
                });
            }
        }
        match entries.iter().find(|e| e.end() > last_usable) {
            Some(e) => Err(LayoutError::PastEnd {
                partition: Part::of(self, e.number as usize - 1),
                first: e.start,
                last: e.end() - 1,
                total,
                backup,
            }),
            None => Ok(()),
        }
    }

    /// Everything that occupies bytes — the table, partitions, blobs —
    /// may not overlap; blobs may not pass the end of the disk.
    fn check_overlaps(
        &self,
        entries: &[Entry],
        blobs: &[PlacedBlob],
        total: u64,
        backup: u64,
    ) -> Result<(), LayoutError> {
        let mut regions: Vec<(String, u64, u64)> = Vec::new();
        match self.table {
            TableKind::Gpt => {
                regions.push(("the primary GPT".into(), 0, GPT_FIRST_USABLE * SECTOR));
                regions.push((
                    "the backup GPT".into(),
                    (total - backup) * SECTOR,
                    total * SECTOR,
                ));
            }
            // Bytes 440-511: a blob over 0-439 (boot code) is fine.
            TableKind::Mbr => regions.push(("the MBR partition table".into(), 440, 512)),
        }
        for e in entries {
            let p = Part::of(self, e.number as usize - 1);
            let name = format!(
                "partition {} ({:?}, sectors {}-{})",
                p.number,
                p.name,
                e.start,
                e.end() - 1
            );
            regions.push((name, e.start * SECTOR, e.end() * SECTOR));
        }
        for b in blobs {
            let end = b.offset + b.size;
            if end > total * SECTOR {
                return Err(LayoutError::BlobPastEnd {
                    blob: b.name.clone(),
                    first: b.offset,
                    last: end - 1,
                    total: total * SECTOR,
                });
            }
            let sectors = if b.offset % SECTOR == 0 {
                let last = end.div_ceil(SECTOR).max(1) - 1;
                format!(", sectors {}-{last}", b.offset / SECTOR)
            } else {
                String::new()
            };
            let last = b.offset + b.size.max(1) - 1;
            let name = format!("blob {} (bytes {}-{last}{sectors})", b.name, b.offset);
            regions.push((name, b.offset, end));
        }
        for (i, a) in regions.iter().enumerate() {
            if let Some(b) = regions[i + 1..].iter().find(|b| a.1 < b.2 && b.1 < a.2) {
                return Err(LayoutError::Overlap {
                    first: a.0.clone(),
                    second: b.0.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskLayout {
    /// The partition table to write.
    pub table: Table,
    /// Each partition's name (also for MBR, where the table has none).
    pub names: Vec<String>,
    /// The blobs, as placed.
    pub blobs: Vec<PlacedBlob>,
}

/// A blob and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacedBlob {
    /// The blob's name in messages.
    pub name: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

impl DiskLayout {
    /// Size of the disk in bytes.
    pub fn bytes(&self) -> u64 {
        self.table.total_sectors * SECTOR
    }

    /// Differences between the table read back and the one planned.
    pub fn differences(&self, read: &Table) -> Vec<String> {
        let mut d = Vec::new();
        if read.kind != self.table.kind {
            d.push(format!(
                "the table reads back as {}, not {}",
                read.kind, self.table.kind
            ));
        }
        if read.total_sectors != self.table.total_sectors {
            d.push(format!(
                "the disk is {} sectors, not {}",
                read.total_sectors, self.table.total_sectors
            ));
        }
        if read.disk_guid != self.table.disk_guid || read.disk_id != self.table.disk_id {
            d.push("the disk GUID or id differs".into());
        }
        if read.entries.len() != self.table.entries.len() {
            d.push(format!(
                "{} partitions read back, {} planned",
                read.entries.len(),
                self.table.entries.len()
            ));
        }
        for (r, p) in read.entries.iter().zip(&self.table.entries) {
            if r != p {
                d.push(format!(
                    "partition {} ({:?}) reads back as {r:?}, planned {p:?}",
                    p.number,
                    self.names[p.number as usize - 1]
                ));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> DiskSpec {
        DiskSpec::from_json_str(json, "t.json").unwrap()
    }

    fn no_entropy(_: &str) -> [u8; 16] {
        [7; 16]
    }

    fn plan_err(json: &str, content: &[u64], blobs: &[u64]) -> String {
        let s = match DiskSpec::from_json_str(json, "t.json") {
            Ok(s) => s,
            Err(e) => return e.to_string(),
        };
        s.plan(content, blobs, &mut no_entropy)
            .unwrap_err()
            .to_string()
    }

    const ROCK64: &str = r#"{"table": "gpt", "alignment": "1K",
        "blobs": [{"file": "idbloader.img", "sector": 64}],
        "partitions": [
          {"name": "uboot", "startSector": 16384, "size": "8M", "type": "linux", "content": {"raw": "u-boot.itb"}},
          {"name": "root", "startSector": 32768, "type": "root-arm64", "attributes": ["legacy-bootable"]}
        ]}"#;

    #[test]
    fn the_rock64_layout_places_what_nixos_sbc_does() {
        let l = spec(ROCK64)
            .plan(&[1 << 20, 10 << 20], &[100_000], &mut no_entropy)
            .unwrap();
        let e = &l.table.entries;
        assert_eq!((e[0].start, e[0].end()), (16384, 32768));
        assert_eq!((e[1].start, e[1].sectors), (32768, 20480));
        assert_eq!(e[1].attributes, 4);
        assert_eq!(l.table.total_sectors, 32768 + 20480 + 33);
    }

    #[test]
    fn overlaps_name_both_sides() {
        let e = plan_err(ROCK64, &[1 << 20, 1 << 20], &[9 << 20]);
        assert!(
            e.contains("blob idbloader.img") && e.contains("partition 1 (\"uboot\""),
            "{e}"
        );
        let e = plan_err(
            r#"{"table":"gpt","blobs":[{"file":"x","sector":30}],"partitions":[{"name":"r","type":"linux"}]}"#,
            &[4096],
            &[1024],
        );
        assert!(e.contains("blob x") && e.contains("the primary GPT"), "{e}");
        let e = plan_err(
            r#"{"table":"mbr","partitions":[{"name":"a","startSector":2048,"size":"2M","type":"linux"},{"name":"b","startSector":4096,"type":"linux"}]}"#,
            &[0, 10],
            &[],
        );
        assert!(
            e.contains("partition 2 (\"b\"") && e.contains("partition 1 (\"a\""),
            "{e}"
        );
    }

    #[test]
    fn layout_errors_say_what_and_where() {
        let cases: &[(&str, &[u64], &str)] = &[
            (
                r#"{"table":"gpt","partitions":[{"name":"r","startSector":100,"type":"linux"}]}"#,
                &[1],
                "not a multiple of the alignment",
            ),
            (
                r#"{"table":"gpt","size":"4M","partitions":[{"name":"r","size":"4M","type":"linux"}]}"#,
                &[1],
                "ends past the end of the disk",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","size":"1M","type":"linux"}]}"#,
                &[2 << 20],
                "more than its size",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","type":"linx"}]}"#,
                &[1],
                "unknown partition type \"linx\"",
            ),
            (
                r#"{"table":"mbr","partitions":[{"name":"r","type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}]}"#,
                &[1],
                "no MBR type byte",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","type":"b"}]}"#,
                &[1],
                "a GPT needs",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","size":"fill","type":"linux"}]}"#,
                &[1],
                "needs a fixed disk",
            ),
            (
                r#"{"table":"gpt","alignment":"100","partitions":[]}"#,
                &[],
                "multiple of 512",
            ),
        ];
        for (json, content, want) in cases {
            let e = plan_err(json, content, &[]);
            assert!(e.contains(want), "{json}: {e}");
        }
        let many: Vec<String> = (0..129)
            .map(|i| format!(r#"{{"name":"p{i}","type":"linux"}}"#))
            .collect();
        let e = plan_err(
            &format!(r#"{{"table":"gpt","partitions":[{}]}}"#, many.join(",")),
            &[],
            &[],
        );
        assert!(e.contains("at most 128"), "{e}");
    }

    #[test]
    fn fill_takes_what_is_left_before_the_backup_gpt() {
        let s = spec(
            r#"{"table":"gpt","size":"64M","partitions":[{"name":"esp","size":"8M","type":"esp"},{"name":"root","size":"fill","type":"root-x86-64"}]}"#,
        );
        let l = s.plan(&[0, 0], &[], &mut no_entropy).unwrap();
        assert_eq!(l.table.entries[0].start, 2048);
        assert_eq!(l.table.entries[1].start, 2048 + 16384);
        assert_eq!(l.table.entries[1].end(), 131072 - 33);
    }

    #[test]
    fn the_planned_table_survives_its_own_bytes() {
        let l = spec(ROCK64)
            .plan(&[1 << 20, 10 << 20], &[100_000], &mut no_entropy)
            .unwrap();
        let mut d = vec![0u8; l.bytes() as usize];
        for (o, b) in l.table.to_bytes().unwrap() {
            d[o as usize..o as usize + b.len()].copy_from_slice(&b);
        }
        let t = Table::parse(&d[..34 * 512], &d[d.len() - 33 * 512..], d.len() as u64).unwrap();
        assert!(l.differences(&t).is_empty(), "{:?}", l.differences(&t));
    }
}
