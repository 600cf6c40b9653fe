//! `rootbox inspect DISK`: the partition table (read with rootbox's own
//! parser) and, per partition, what it holds: a btrfs filesystem listed
//! with rootbox's reader at the partition's offset, a FAT filesystem's
//! label, volume id and files (mtools, `-i DISK@@OFFSET`), or raw bytes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};
use rootbox_images::disk::table::{Entry, Table, SECTOR};
use rootbox_images::disk::types::NAMED_TYPES;
use serde_json::{json, Value};

use super::verify::read_ends;
use crate::inspect::{list_image, InspectArgs};

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

fn fat_boot_sector(s: &[u8]) -> bool {
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
    Fat { label: String, volume_id: u32 },
    Raw { data_bytes: u64 },
}

fn probe(path: &Path, disk: &File, e: &Entry) -> Result<Holds> {
    let at = e.start * SECTOR;
    let mut s = [0u8; 512];
    disk.read_exact_at(&mut s, at)?;
    if fat_boot_sector(&s) {
        // FAT32 keeps id and label at 67/71, FAT12/16 at 39/43.
        let o = if &s[82..85] == b"FAT" { 67 } else { 39 };
        let volume_id = u32::from_le_bytes(s[o..o + 4].try_into().expect("4"));
        let label = String::from_utf8_lossy(&s[o + 4..o + 15])
            .trim_end()
            .to_string();
        return Ok(Holds::Fat { label, volume_id });
    }
    if let Ok(img) = rootbox_btrfs::Image::open_at(path, at) {
        return Ok(Holds::Btrfs(Box::new(img)));
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

fn fat_files(path: &Path, at: u64) -> Result<Vec<String>> {
    let out = Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(format!("{}@@{at}", path.display()))
        .arg("::/")
        .env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .context("running mdir (install mtools to list FAT partitions)")?;
    if !out.status.success() {
        return Err(anyhow!(
            "mdir: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("::"))
        .map(str::to_string)
        .collect())
}

/// Writes the table and each partition's content.
pub fn write(out: &mut dyn Write, args: &InspectArgs, t: &Table) -> Result<()> {
    let path = &args.image;
    let disk = File::open(path)?;
    if args.json {
        let mut parts = Vec::new();
        for e in &t.entries {
            let content = match probe(path, &disk, e)? {
                Holds::Btrfs(img) => {
                    let mut buf = Vec::new();
                    list_image(&mut buf, args, &img)?;
                    json!({"btrfs": serde_json::from_slice::<Value>(&buf)?})
                }
                Holds::Fat { label, volume_id } => json!({"fat": {
                    "label": label,
                    "volume_id": format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xFFFF),
                    "files": fat_files(path, e.start * SECTOR)?,
                }}),
                Holds::Raw { data_bytes } => json!({"raw": {"data_bytes": data_bytes}}),
            };
            let mut v = serde_json::to_value(e)?;
            v["type_name"] = json!(type_name(e));
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
        return Ok(());
    }
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
    for e in &t.entries {
        let mut flags = Vec::new();
        if e.bootable {
            flags.push("bootable".to_string());
        }
        if e.attributes != 0 {
            flags.push(format!("attributes 0x{:016x}", e.attributes));
        }
        writeln!(
            out,
            "partition {} {:<12} sectors {}-{} ({} bytes) type {}{}{}",
            e.number,
            if e.name.is_empty() { "-" } else { &e.name },
            e.start,
            e.end() - 1,
            e.sectors * SECTOR,
            type_name(e),
            e.guid.map(|g| format!(" guid {g}")).unwrap_or_default(),
            if flags.is_empty() {
                String::new()
            } else {
                format!(" {}", flags.join(" "))
            }
        )?;
    }
    for e in &t.entries {
        writeln!(out)?;
        match probe(path, &disk, e)? {
            Holds::Btrfs(img) => {
                writeln!(out, "partition {}: btrfs", e.number)?;
                list_image(out, args, &img)?;
            }
            Holds::Fat { label, volume_id } => {
                writeln!(
                    out,
                    "partition {}: FAT, label {label:?}, volume id {:04X}-{:04X}",
                    e.number,
                    volume_id >> 16,
                    volume_id & 0xFFFF
                )?;
                for f in fat_files(path, e.start * SECTOR)? {
                    writeln!(out, "  {f}")?;
                }
            }
            Holds::Raw { data_bytes } => {
                writeln!(
                    out,
                    "partition {}: raw, {data_bytes} bytes of data",
                    e.number
                )?;
            }
        }
    }
    Ok(())
}
