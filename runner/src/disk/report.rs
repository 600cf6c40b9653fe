//! Phase 7 of a disk: the report (`--json`), and its summary in text.

use std::path::PathBuf;

use rootbox_images::disk::plan::{DiskLayout, PlacedBlob};
use rootbox_images::disk::table::{TableKind, SECTOR};
use rootbox_images::disk::types::NAMED_TYPES;
use rootbox_images::disk::DiskSpec;
use serde::Serialize;

use super::contents::{Holds, Made};

/// The JSON result of `rootbox disk`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The disk image.
    pub image: PathBuf,
    /// `gpt` or `mbr`.
    pub table: TableKind,
    /// The disk's bytes.
    pub size_bytes: u64,
    /// Bytes of the disk that are data, not holes.
    pub mapped_bytes: u64,
    /// Bytes the disk's assembly wrote into the disk file: the data of
    /// the contents and blobs put in, and the table; not the builds' own
    /// writes, nor an adopted partition's content (written once, by its
    /// build). On btrfs and XFS some may be shared extents, not copies.
    pub bytes_written: u64,
    /// The partition (from 1) whose build's own file became the disk
    /// (ext4, XFS: no copy of it); null where every content was copied.
    pub adopted_partition: Option<u32>,
    /// Bytes of what was put in: files of the filesystems, raw files,
    /// blobs.
    pub content_bytes: u64,
    /// GPT: the disk GUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_guid: Option<String>,
    /// MBR: the disk id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// The partitions.
    pub partitions: Vec<PartitionReport>,
    /// The blobs, as placed.
    pub blobs: Vec<PlacedBlob>,
    /// The block map written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmap: Option<PathBuf>,
    /// The output's compression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed: Option<String>,
    /// The epoch and seed of a reproducible disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reproducible: Option<ReproducibleReport>,
    /// Always true: the disk was read back before it was published.
    pub verified: bool,
    /// Seconds per phase.
    pub timings: Timings,
}

/// How a reproducible disk was made.
#[derive(Debug, Serialize)]
pub struct ReproducibleReport {
    /// The FAT times.
    pub epoch: Option<i64>,
    /// The seed of every GUID and id.
    pub seed: String,
}

/// Seconds per phase.
#[derive(Debug, Default, Serialize)]
pub struct Timings {
    /// Builds and vfat filesystems of known size.
    pub contents: f64,
    /// Placing, and the vfat filesystem of a `fill` partition.
    pub place: f64,
    /// Splicing every content into the disk, and the table.
    pub assemble: f64,
    /// Reading the disk back.
    pub verify: f64,
    /// The block map and the compressed copy, and publishing.
    pub output: f64,
    /// Everything.
    pub total: f64,
}

/// One partition of the report.
#[derive(Debug, Serialize)]
pub struct PartitionReport {
    /// From 1.
    pub number: u32,
    /// Its name in the spec.
    pub name: String,
    /// First sector.
    pub start_sector: u64,
    /// Sectors.
    pub sectors: u64,
    /// First byte.
    pub offset_bytes: u64,
    /// Bytes.
    pub size_bytes: u64,
    /// The type, as named in the spec.
    #[serde(rename = "type")]
    pub kind: String,
    /// GPT: the type GUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_guid: Option<String>,
    /// MBR: the type byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbr_type: Option<String>,
    /// What `root=PARTUUID=` names: the GPT partition GUID, or for MBR
    /// the disk id and number (`2178694e-02`).
    pub partuuid: String,
    /// GPT attribute bits.
    pub attributes: u64,
    /// MBR boot flag.
    pub bootable: bool,
    /// `none`, `raw`, or the filesystem: `btrfs`, `ext4`, `erofs`,
    /// `squashfs`, `vfat`.
    pub content: String,
    /// Bytes put in.
    pub content_bytes: u64,
    /// The content's bytes as made (the partition may be larger).
    pub filesystem_bytes: u64,
    /// The filesystem UUID; vfat: the volume id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    /// The filesystem label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A build's own report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Box<crate::pipeline::Report>>,
    /// A dm-verity data or hash partition: the root hash (hex), which
    /// `veritysetup open`/`verify` and `roothash=`/`usrhash=` take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roothash: Option<String>,
    /// With `--split`: the partition's split artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_path: Option<PathBuf>,
}

/// `parts` with each dm-verity pair's root hash on its data and hash
/// partitions.
pub fn with_root_hashes(
    mut parts: Vec<PartitionReport>,
    pairs: &[super::verity::Pair],
) -> Vec<PartitionReport> {
    for p in pairs {
        for i in [p.data, p.hash] {
            parts[i].roothash = Some(p.root_hash.clone());
        }
    }
    parts
}

/// Each partition of the layout with its content.
pub fn partitions(
    spec: &DiskSpec,
    layout: &DiskLayout,
    made: Vec<Option<Made>>,
) -> Vec<PartitionReport> {
    let mut v = Vec::new();
    for ((p, e), m) in spec.partitions.iter().zip(&layout.table.entries).zip(made) {
        let partuuid = match (e.guid, layout.table.disk_id) {
            (Some(g), _) => g.to_string().to_lowercase(),
            (None, Some(id)) => format!("{id:08x}-{:02x}", e.number),
            (None, None) => String::new(),
        };
        let kind = NAMED_TYPES
            .iter()
            .find(|t| t.name == p.kind)
            .map_or_else(|| p.kind.clone(), |t| t.name.to_string());
        let mut r = PartitionReport {
            number: e.number,
            name: p.name.clone(),
            start_sector: e.start,
            sectors: e.sectors,
            offset_bytes: e.start * SECTOR,
            size_bytes: e.sectors * SECTOR,
            kind,
            type_guid: e.type_guid.map(|g| g.to_string()),
            mbr_type: e.mbr_type.map(|t| format!("0x{t:02x}")),
            partuuid,
            attributes: e.attributes,
            bootable: e.bootable,
            content: "none".into(),
            content_bytes: 0,
            filesystem_bytes: 0,
            fs_uuid: None,
            label: None,
            build: None,
            roothash: None,
            split_path: None,
        };
        if let Some(m) = m {
            r.content_bytes = m.content_bytes;
            r.filesystem_bytes = m.len;
            match m.holds {
                Holds::Raw => r.content = "raw".into(),
                Holds::Filesystem(fs) => {
                    r.content = fs.kind.name();
                    r.fs_uuid = fs.uuid;
                    r.label = fs.label;
                    r.build = fs.build;
                }
            }
        }
        v.push(r);
    }
    v
}

/// The report as text.
pub fn print_summary(r: &Report) {
    println!(
        "disk       {} ({} table, {} bytes, {} mapped, {} of content)",
        r.image.display(),
        r.table,
        r.size_bytes,
        r.mapped_bytes,
        r.content_bytes
    );
    if let Some(g) = &r.disk_guid {
        println!("disk guid  {g}");
    }
    if let Some(id) = &r.disk_id {
        println!("disk id    {id}");
    }
    for b in &r.blobs {
        println!(
            "blob       {:<16} at byte {:>10} ({} bytes)",
            b.name, b.offset, b.size
        );
    }
    for p in &r.partitions {
        println!(
            "partition  {} {:<12} sectors {:>9}-{:<9} {:<8} {:<12} PARTUUID={}{}",
            p.number,
            p.name,
            p.start_sector,
            p.start_sector + p.sectors - 1,
            p.content,
            p.kind,
            p.partuuid,
            if p.bootable { " bootable" } else { "" }
        );
        if let Some(h) = &p.roothash {
            println!("           roothash {h}");
        }
    }
    println!("verified   table, blobs, raw partitions, and every filesystem with its own reader");
}
