//! `rootbox inspect DISK`: the partition table (read with rootbox's own
//! parser) and, per partition, what it holds, whatever it is: a btrfs
//! filesystem listed with rootbox's reader at the partition's offset (by
//! the caller's lister, handed in: this file imports nothing of the
//! `rootbox inspect` command);
//! ext4, erofs and squashfs copied out of the disk (sparse) and read with
//! `crate::fs::read`; vfat with mtools (`-i DISK@@OFFSET`); else raw bytes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use rootbox_images::disk::table::{Entry, Table, SECTOR};
use rootbox_images::disk::types::NAMED_TYPES;
use rootbox_images::fs::vfat::BootSector;
use rootbox_images::fs::Filesystem;
use serde_json::{json, Value};

use super::readback::{proc_path, read_ends};
use crate::fs::vfat;

/// How the caller lists one btrfs filesystem (text or JSON, as it was
/// asked).
pub type ListBtrfs<'a> = &'a dyn Fn(&mut dyn Write, &rootbox_btrfs::Image) -> Result<()>;
/// The partition table of `path`, or None when it is not a partitioned
/// disk (a btrfs image leaves sector 0 empty; a bare FAT filesystem has a
/// boot sector, not a table).
pub fn read_table(path: &Path) -> Result<Option<Table>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < SECTOR {
        return Ok(None);
    }
    let (head, tail) = read_ends(&f, len).with_context(|| format!("reading {}", path.display()))?;
    if head[510..512] != [0x55, 0xAA] || fat_boot_sector(&head[..512]) {
        return Ok(None);
    }
    Table::parse(&head, &tail, len)
        .map(Some)
        .map_err(|e| anyhow!("{}: the partition table does not read: {e}", path.display()))
}

pub(crate) fn fat_boot_sector(s: &[u8]) -> bool {
    (s[0] == 0xEB || s[0] == 0xE9) && (&s[54..57] == b"FAT" || &s[82..85] == b"FAT")
}

fn type_name(e: &Entry) -> String {
    let named = NAMED_TYPES
        .iter()
        .find(|t| match (e.type_guid, e.mbr_type) {
            (Some(g), _) => t.gpt.parse().ok() == Some(g),
            (None, Some(b)) => t.mbr == Some(b),
            _ => false,
        });
    match (named, e.type_guid, e.mbr_type) {
        // Several names share an MBR byte: give the byte, and a name.
        (Some(t), None, Some(b)) => format!("0x{b:02x} ({})", t.what),
        (Some(t), _, _) => t.name.to_string(),
        (None, Some(g), _) => g.to_string(),
        (None, None, Some(b)) => format!("0x{b:02x}"),
        _ => "?".into(),
    }
}

/// What a partition holds.
enum Holds {
    Btrfs(Box<rootbox_btrfs::Image>),
    Vfat {
        label: String,
        volume_id: u32,
        files: Vec<String>,
    },
    /// ext4, erofs or squashfs.
    Built {
        fs: Filesystem,
        uuid: Option<String>,
        label: Option<String>,
        entries: usize,
    },
    Raw {
        data_bytes: u64,
    },
}

impl Holds {
    fn kind(&self) -> String {
        match self {
            Holds::Btrfs(_) => "btrfs".into(),
            Holds::Vfat { .. } => "vfat".into(),
            Holds::Built { fs, .. } => fs.to_string(),
            Holds::Raw { .. } => "raw".into(),
        }
    }
}

/// The superblock magic of ext4, erofs or squashfs at the start of `s`
/// (the partition's first 2 KiB), with the UUID and label where the
/// superblock has them.
pub(crate) fn built_kind(s: &[u8; 2048]) -> Option<(Filesystem, Option<String>, Option<String>)> {
    let text = |b: &[u8]| {
        let t = String::from_utf8_lossy(b)
            .trim_end_matches('\0')
            .to_string();
        (!t.is_empty()).then_some(t)
    };
    let uuid = |b: &[u8]| {
        let bytes: [u8; 16] = b.try_into().ok()?;
        (bytes != [0; 16]).then(|| rootbox_images::spec::Uuid::from_bytes(bytes).to_string())
    };
    let sb = &s[1024..];
    if sb[0x38..0x3A] == [0x53, 0xEF] {
        return Some((
            Filesystem::Ext4,
            uuid(&sb[0x68..0x78]),
            text(&sb[0x78..0x88]),
        ));
    }
    if sb[..4] == 0xE0F5_E1E2u32.to_le_bytes() {
        return Some((Filesystem::Erofs, uuid(&sb[48..64]), text(&sb[64..80])));
    }
    (&s[..4] == b"hsqs").then_some((Filesystem::Squashfs, None, None))
}

fn probe(path: &Path, disk: &File, e: &Entry) -> Result<Holds> {
    let at = e.start * SECTOR;
    let len = e.sectors * SECTOR;
    let mut s = [0u8; 2048];
    disk.read_exact_at(&mut s[..(len as usize).min(2048)], at)?;
    if let Some(BootSector {
        volume_id, label, ..
    }) = BootSector::parse(&s[..512])
    {
        let files = vfat::list(&format!("{}@@{at}", path.display()))?;
        return Ok(Holds::Vfat {
            label,
            volume_id,
            files,
        });
    }
    if let Ok(img) = rootbox_btrfs::Image::open_at(path, at) {
        return Ok(Holds::Btrfs(Box::new(img)));
    }
    if let Some((fs, uuid, label)) = built_kind(&s) {
        // The readers take a file: the partition, copied out sparse.
        let part = tempfile::tempfile().context("creating a file to copy the partition into")?;
        part.set_len(len)?;
        super::splice::extract(disk, at, len, &part)
            .context("copying the partition out of the disk")?;
        let entries = crate::fs::read(fs, &proc_path(&part))?.len();
        return Ok(Holds::Built {
            fs,
            uuid,
            label,
            entries,
        });
    }
    let data = super::splice::data_ranges(disk, disk.metadata()?.len())?
        .iter()
        .map(|&(o, n)| {
            let (a, b) = (o.max(at), (o + n).min(e.end() * SECTOR));
            b.saturating_sub(a)
        })
        .sum();
    Ok(Holds::Raw { data_bytes: data })
}

/// Writes the table and each partition's content, as JSON or text.
pub fn write(
    out: &mut dyn Write,
    path: &Path,
    as_json: bool,
    t: &Table,
    list_btrfs: ListBtrfs,
) -> Result<()> {
    let disk = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut holds = Vec::new();
    for e in &t.entries {
        let h = probe(path, &disk, e)
            .with_context(|| format!("reading partition {} of {}", e.number, path.display()))?;
        holds.push(h);
    }
    if as_json {
        write_json(out, t, holds, list_btrfs)
    } else {
        write_text(out, t, holds, list_btrfs)
    }
}

fn volume_id_text(id: u32) -> String {
    BootSector::id_text(id)
}

fn write_json(
    out: &mut dyn Write,
    t: &Table,
    holds: Vec<Holds>,
    list_btrfs: ListBtrfs,
) -> Result<()> {
    let mut parts = Vec::new();
    for (e, h) in t.entries.iter().zip(holds) {
        let kind = h.kind();
        let content = match h {
            Holds::Btrfs(img) => {
                let mut buf = Vec::new();
                list_btrfs(&mut buf, &img)?;
                json!({"btrfs": serde_json::from_slice::<Value>(&buf)?})
            }
            Holds::Vfat {
                label,
                volume_id,
                files,
            } => json!({"fat": {
                "label": label,
                "volume_id": volume_id_text(volume_id),
                "entries": files.len(),
                "files": files,
            }}),
            Holds::Built {
                fs,
                uuid,
                label,
                entries,
            } => json!({fs.to_string(): {"uuid": uuid, "label": label, "entries": entries}}),
            Holds::Raw { data_bytes } => json!({"raw": {"data_bytes": data_bytes}}),
        };
        let mut v = serde_json::to_value(e)?;
        v["type_name"] = json!(type_name(e));
        v["kind"] = json!(kind);
        v["content"] = content;
        parts.push(v);
    }
    let doc = json!({
        "table": t.kind,
        "total_sectors": t.total_sectors,
        "disk_guid": t.disk_guid.map(|g| g.to_string()),
        "disk_id": t.disk_id.map(|d| format!("0x{d:08x}")),
        "partitions": parts,
    });
    // Written as bytes, so a closed pipe is an io::Error the caller knows.
    out.write_all(&serde_json::to_vec_pretty(&doc)?)?;
    writeln!(out)?;
    Ok(())
}

fn write_text(
    out: &mut dyn Write,
    t: &Table,
    holds: Vec<Holds>,
    list_btrfs: ListBtrfs,
) -> Result<()> {
    let id = match (t.disk_guid, t.disk_id) {
        (Some(g), _) => format!("guid {g}"),
        (None, Some(d)) => format!("id 0x{d:08x}"),
        _ => String::new(),
    };
    writeln!(
        out,
        "disk {} table, {} sectors of {SECTOR} bytes, {id}",
        t.kind, t.total_sectors
    )?;
    for (e, h) in t.entries.iter().zip(&holds) {
        let mut flags = Vec::new();
        if e.bootable {
            flags.push("bootable".to_string());
        }
        if e.attributes != 0 {
            flags.push(format!("attributes 0x{:016x}", e.attributes));
        }
        writeln!(
            out,
            "partition {} {:<12} sectors {}-{} ({} bytes) type {} holds {}{}{}",
            e.number,
            if e.name.is_empty() { "-" } else { &e.name },
            e.start,
            e.end() - 1,
            e.sectors * SECTOR,
            type_name(e),
            h.kind(),
            e.guid.map(|g| format!(" guid {g}")).unwrap_or_default(),
            if flags.is_empty() {
                String::new()
            } else {
                format!(" {}", flags.join(" "))
            }
        )?;
    }
    for (e, h) in t.entries.iter().zip(holds) {
        writeln!(out)?;
        let n = e.number;
        match h {
            Holds::Btrfs(img) => {
                writeln!(out, "partition {n}: btrfs")?;
                list_btrfs(out, &img)?;
            }
            Holds::Vfat {
                label,
                volume_id,
                files,
            } => {
                let id = volume_id_text(volume_id);
                writeln!(out, "partition {n}: FAT, label {label:?}, volume id {id}")?;
                for f in files {
                    writeln!(out, "  {f}")?;
                }
            }
            Holds::Built {
                fs,
                uuid,
                label,
                entries,
            } => {
                let label = label.map(|l| format!(", label {l:?}")).unwrap_or_default();
                let uuid = uuid.map(|u| format!(", uuid {u}")).unwrap_or_default();
                writeln!(out, "partition {n}: {fs}{label}{uuid}, {entries} entries")?;
            }
            Holds::Raw { data_bytes } => {
                writeln!(out, "partition {n}: raw, {data_bytes} bytes of data")?;
            }
        }
    }
    Ok(())
}
