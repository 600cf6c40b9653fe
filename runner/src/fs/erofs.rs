//! erofs: `mkfs.erofs`, owner fixes written into the inodes, and a reader
//! of the on-disk format (superblock, inodes, directories, xattrs) —
//! `dump.erofs` 1.5 shows neither set-id bits, device numbers nor xattrs.
//!
//! The format, as erofs-utils 1.5 writes it without compression of
//! directories and symlinks: the superblock at byte 1024 (`blkszbits` at
//! 12, `root_nid` at 14, `meta_blkaddr` at 40, `xattr_blkaddr` at 44); an
//! inode at `meta_blkaddr * block + nid * 32`, compact (32 bytes, 16-bit
//! ids) or extended (64 bytes, 32-bit ids) by bit 0 of `i_format`, whose
//! bits 1–3 give the data layout (0: blocks at `i_u`, 2: blocks plus a
//! tail inline after the inode and its xattrs). No checksum covers the
//! inodes, so the owner fixes are plain writes of `i_uid`, `i_gid` and
//! `i_mode` — but mkfs.erofs puts the first inodes in the superblock's
//! block, which its checksum (`sb_csum`, CRC32C of bytes 1024 to the end
//! of block 0) covers, so that checksum is computed again
//! ([`update_sb_checksum`]). `fsck.erofs` checks the result.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, ensure, Context, Result};
use rootbox_images::fs::erofs as plan;
use rootbox_images::fs::{too_small, Filesystem, Fix, FsError, Name};
use rootbox_images::size::Size;

use super::{output, Inode, Job, S_IFMT};

const MAGIC: u32 = 0xE0F5_E1E2;
const SUPERBLOCK: u64 = 1024;

/// Makes the erofs image of `job`.
pub fn make(job: &Job, fixes: &[Fix]) -> Result<()> {
    let wide = job.manifest.as_ref().is_some_and(|m| {
        m.rules
            .iter()
            .any(|r| plan::is_wide(r.uid) || plan::is_wide(r.gid))
    });
    // Emptied, not removed: in a build the output is an unnamed file
    // (/proc/self/fd/N).
    fs::File::create(&job.image).with_context(|| format!("emptying {}", job.image.display()))?;
    let args = plan::mkfs_args(&job.options, &job.source, &job.image, wide);
    output(Command::new("mkfs.erofs").args(&args), "mkfs.erofs")?;
    patch_owners(&job.image, fixes, job.options.reproducible.is_some())?;
    output(
        Command::new("fsck.erofs").arg(&job.image),
        "fsck.erofs (checking the image)",
    )?;
    fit(Filesystem::Erofs, &job.image, job.options.size)
}

/// A read-only image keeps its natural size; a fixed size pads it, or
/// fails with the size it needs.
pub fn fit(filesystem: Filesystem, image: &Path, size: Size) -> Result<()> {
    let Size::Fixed(want) = size else {
        return Ok(());
    };
    let len = fs::metadata(image)
        .with_context(|| format!("stat {}", image.display()))?
        .len();
    if len > want.bytes() {
        return Err(too_small(filesystem, want.bytes(), len).into());
    }
    fs::OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(want.bytes()))
        .with_context(|| format!("padding {} to {want}", image.display()))
}

/// Writes the owner fixes into the inodes; for a reproducible build also
/// sorts each inode's inline xattrs by name, which mkfs.erofs writes in
/// the order the source filesystem lists them (ext4 and tmpfs differ).
fn patch_owners(image: &Path, fixes: &[Fix], sort_xattrs: bool) -> Result<()> {
    if fixes.is_empty() && !sort_xattrs {
        return Ok(());
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let img = Erofs::open(&file)?;
    let by_path: HashMap<Name, u64> = img.walk()?.into_iter().collect();
    for f in fixes {
        let nid = *by_path
            .get(&f.path)
            .ok_or_else(|| anyhow!("{} was staged but is not in the erofs image", f.path))?;
        let ino = img.inode(nid)?;
        let at = img.inode_offset(nid);
        ensure!(
            ino.mode & S_IFMT == f.mode & S_IFMT,
            "{}: the fix would change the file type",
            f.path
        );
        file.write_all_at(&(f.mode as u16).to_le_bytes(), at + 4)?;
        if ino.extended {
            file.write_all_at(&f.uid.to_le_bytes(), at + 24)?;
            file.write_all_at(&f.gid.to_le_bytes(), at + 28)?;
        } else {
            for id in [f.uid, f.gid] {
                if plan::is_wide(id) {
                    return Err(FsError::IdTooLarge {
                        filesystem: Filesystem::Erofs,
                        path: f.path.to_string(),
                        id,
                        why: "a compact inode holds 16-bit ids",
                    }
                    .into());
                }
            }
            file.write_all_at(&(f.uid as u16).to_le_bytes(), at + 24)?;
            file.write_all_at(&(f.gid as u16).to_le_bytes(), at + 26)?;
        }
    }
    if sort_xattrs {
        let mut nids: Vec<u64> = by_path.values().copied().collect();
        nids.sort_unstable();
        nids.dedup();
        for nid in nids {
            img.sort_inline_xattrs(&file, nid)?;
        }
    }
    update_sb_checksum(&file, img.block)?;
    file.sync_all().context("syncing the erofs image")
}

/// `feature_compat` bit: the superblock carries a checksum.
const FEATURE_SB_CHKSUM: u32 = 1;

/// Recomputes the superblock checksum after a write into block 0: CRC32C
/// (seed !0, not inverted at the end, as erofs-utils and the kernel
/// compute it) over bytes 1024 to the end of the block, the checksum
/// field (bytes 4–7 of the superblock) taken as zero.
fn update_sb_checksum(file: &fs::File, block: u64) -> Result<()> {
    let mut b = vec![0u8; (block - SUPERBLOCK) as usize];
    file.read_exact_at(&mut b, SUPERBLOCK)
        .context("reading the erofs superblock")?;
    if le32(&b, 8) & FEATURE_SB_CHKSUM == 0 {
        return Ok(());
    }
    b[4..8].fill(0);
    let crc = crc32c_raw(!0, &b);
    file.write_all_at(&crc.to_le_bytes(), SUPERBLOCK + 4)
        .context("writing the erofs superblock checksum")
}

/// CRC32C (Castagnoli, reflected) without the final inversion.
fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// An open erofs image.
struct Erofs<'f> {
    file: &'f fs::File,
    block: u64,
    root_nid: u64,
    meta_blkaddr: u64,
    xattr_blkaddr: u64,
}

/// One on-disk inode, decoded.
struct RawInode {
    extended: bool,
    layout: u16,
    mode: u32,
    size: u64,
    i_u: u32,
    uid: u32,
    gid: u32,
    /// Bytes of the inode plus its inline xattrs.
    ibody: u64,
    xattr_icount: u16,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'f> Erofs<'f> {
    fn open(file: &'f fs::File) -> Result<Erofs<'f>> {
        let mut sb = [0u8; 128];
        file.read_exact_at(&mut sb, SUPERBLOCK)
            .context("reading the erofs superblock")?;
        ensure!(
            le32(&sb, 0) == MAGIC,
            "not an erofs image (no magic at byte 1024)"
        );
        let bits = u32::from(sb[12]);
        ensure!(
            (9..=16).contains(&bits),
            "erofs block size 2^{bits} is not supported"
        );
        Ok(Erofs {
            file,
            block: 1 << bits,
            root_nid: u64::from(le16(&sb, 14)),
            meta_blkaddr: u64::from(le32(&sb, 40)),
            xattr_blkaddr: u64::from(le32(&sb, 44)),
        })
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.file
            .read_exact_at(&mut b, at)
            .with_context(|| format!("reading {len} bytes at {at} of the erofs image"))?;
        Ok(b)
    }

    fn inode_offset(&self, nid: u64) -> u64 {
        self.meta_blkaddr * self.block + nid * 32
    }

    fn inode(&self, nid: u64) -> Result<RawInode> {
        let b = self.read(self.inode_offset(nid), 64)?;
        let format = le16(&b, 0);
        let extended = format & 1 == 1;
        let xattr_icount = le16(&b, 2);
        let xattrs = if xattr_icount == 0 {
            0
        } else {
            12 + 4 * (u64::from(xattr_icount) - 1)
        };
        let r = if extended {
            RawInode {
                extended,
                layout: (format >> 1) & 7,
                mode: u32::from(le16(&b, 4)),
                size: le64(&b, 8),
                i_u: le32(&b, 16),
                uid: le32(&b, 24),
                gid: le32(&b, 28),
                ibody: 64 + xattrs,
                xattr_icount,
            }
        } else {
            RawInode {
                extended,
                layout: (format >> 1) & 7,
                mode: u32::from(le16(&b, 4)),
                size: u64::from(le32(&b, 8)),
                i_u: le32(&b, 16),
                uid: u32::from(le16(&b, 24)),
                gid: u32::from(le16(&b, 26)),
                ibody: 32 + xattrs,
                xattr_icount,
            }
        };
        ensure!(r.mode != 0, "erofs inode {nid} has mode 0");
        Ok(r)
    }

    /// The data of an uncompressed inode (directories, symlinks).
    fn data(&self, nid: u64, ino: &RawInode) -> Result<Vec<u8>> {
        let size = ino.size;
        ensure!(
            size <= 1 << 30,
            "erofs inode {nid} is too large to read ({size})"
        );
        match ino.layout {
            // FLAT_PLAIN
            0 => self.read(u64::from(ino.i_u) * self.block, size as usize),
            // FLAT_INLINE: whole blocks, then the tail after the ibody.
            2 => {
                let full = size / self.block * self.block;
                let mut d = self.read(u64::from(ino.i_u) * self.block, full as usize)?;
                let tail = self.read(self.inode_offset(nid) + ino.ibody, (size - full) as usize)?;
                d.extend(tail);
                Ok(d)
            }
            l => bail!("erofs inode {nid}: data layout {l} (compressed or chunked) is not read"),
        }
    }

    /// Every path with its nid, the root first.
    fn walk(&self) -> Result<Vec<(Name, u64)>> {
        let mut out = vec![(Name::root(), self.root_nid)];
        let mut i = 0;
        while i < out.len() {
            let (path, nid) = out[i].clone();
            i += 1;
            let ino = self.inode(nid)?;
            if ino.mode & S_IFMT != 0o040000 {
                continue;
            }
            let data = self.data(nid, &ino)?;
            for (name, child) in self
                .dirents(&data)
                .with_context(|| format!("directory {path}"))?
            {
                if name != b"." && name != b".." {
                    out.push((path.join(&name), child));
                }
            }
        }
        Ok(out)
    }

    fn dirents(&self, data: &[u8]) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out = Vec::new();
        for blk in data.chunks(self.block as usize) {
            ensure!(blk.len() >= 12, "a directory block of {} bytes", blk.len());
            let count = usize::from(le16(blk, 8)) / 12;
            ensure!(
                count > 0 && count * 12 <= blk.len(),
                "bad first name offset"
            );
            for k in 0..count {
                let e = k * 12;
                let nid = le64(blk, e);
                let start = usize::from(le16(blk, e + 8));
                let end = if k + 1 < count {
                    usize::from(le16(blk, e + 20))
                } else {
                    blk.len()
                };
                ensure!(start <= end && end <= blk.len(), "bad name offsets");
                let raw = &blk[start..end];
                let raw = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
                out.push((raw.to_vec(), nid));
            }
        }
        Ok(out)
    }

    /// Rewrites the inline xattr entries of `nid` in (name index, name)
    /// order; the shared ones stay where they are.
    fn sort_inline_xattrs(&self, file: &fs::File, nid: u64) -> Result<()> {
        let ino = self.inode(nid)?;
        if ino.xattr_icount == 0 {
            return Ok(());
        }
        let head = if ino.extended { 64 } else { 32 };
        let body = self.read(self.inode_offset(nid) + head, (ino.ibody - head) as usize)?;
        let start = 12 + 4 * usize::from(body[4]);
        let mut entries: Vec<&[u8]> = Vec::new();
        let mut at = start;
        while at + 4 <= body.len() {
            let (_, _, used) = xattr_entry(&body[at..])?;
            let padded = used.div_ceil(4) * 4;
            ensure!(
                at + padded <= body.len(),
                "erofs inode {nid}: xattrs overrun"
            );
            entries.push(&body[at..at + padded]);
            at += padded;
        }
        let key = |e: &[u8]| (e[1], e[4..4 + usize::from(e[0])].to_vec());
        let mut sorted = entries.clone();
        sorted.sort_by_key(|e| key(e));
        if sorted == entries {
            return Ok(());
        }
        let bytes: Vec<u8> = sorted.concat();
        file.write_all_at(&bytes, self.inode_offset(nid) + head + start as u64)
            .with_context(|| format!("rewriting the xattrs of erofs inode {nid}"))
    }

    fn xattrs(&self, nid: u64, ino: &RawInode) -> Result<BTreeMap<Name, Vec<u8>>> {
        let mut out = BTreeMap::new();
        if ino.xattr_icount == 0 {
            return Ok(out);
        }
        let base = self.inode_offset(nid) + if ino.extended { 64 } else { 32 };
        let len = (ino.ibody - if ino.extended { 64 } else { 32 }) as usize;
        let body = self.read(base, len)?;
        let shared = usize::from(body[4]);
        let mut at = 12 + 4 * shared;
        for k in 0..shared {
            let id = u64::from(le32(&body, 12 + 4 * k));
            let entry = self.read(self.xattr_blkaddr * self.block + id * 4, 4)?;
            let total = 4 + usize::from(entry[0]) + usize::from(le16(&entry, 2));
            let entry = self.read(self.xattr_blkaddr * self.block + id * 4, total)?;
            let (n, v, _) = xattr_entry(&entry)?;
            out.insert(n, v);
        }
        while at + 4 <= body.len() {
            let (n, v, used) = xattr_entry(&body[at..])?;
            out.insert(n, v);
            at += used.div_ceil(4) * 4;
        }
        out.retain(|n, _| !n.as_bytes().starts_with(b"system."));
        Ok(out)
    }
}

/// One xattr entry: name, value and its length in bytes (unpadded).
fn xattr_entry(b: &[u8]) -> Result<(Name, Vec<u8>, usize)> {
    ensure!(b.len() >= 4, "a truncated xattr entry");
    let (name_len, index, value_len) = (usize::from(b[0]), b[1], usize::from(le16(b, 2)));
    let end = 4 + name_len + value_len;
    ensure!(end <= b.len(), "an xattr entry runs past its inode");
    let prefix = match index {
        1 => "user.",
        2 => "system.posix_acl_access",
        3 => "system.posix_acl_default",
        4 => "trusted.",
        6 => "security.",
        i => bail!("xattr name index {i} is not known"),
    };
    let name = Name::from_bytes([prefix.as_bytes(), &b[4..4 + name_len]].concat());
    Ok((name, b[4 + name_len..end].to_vec(), end))
}

/// Reads every inode of an erofs image from its on-disk format.
pub fn read(image: &Path) -> Result<Vec<Inode>> {
    let file = fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let img = Erofs::open(&file)?;
    img.walk()?
        .into_iter()
        .map(|(path, nid)| {
            let ino = img.inode(nid).with_context(|| format!("inode of {path}"))?;
            let kind = ino.mode & S_IFMT;
            let rdev = matches!(kind, 0o020000 | 0o060000).then(|| {
                // The kernel's new_encode_dev.
                let d = ino.i_u;
                ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00))
            });
            let target = if kind == 0o120000 {
                let d = img
                    .data(nid, &ino)
                    .with_context(|| format!("target of {path}"))?;
                Some(Name::from_bytes(d))
            } else {
                None
            };
            Ok(Inode {
                xattrs: Some(
                    img.xattrs(nid, &ino)
                        .with_context(|| format!("xattrs of {path}"))?,
                ),
                path,
                ino: Some(nid),
                mode: ino.mode,
                uid: ino.uid,
                gid: ino.gid,
                rdev,
                target,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_superblock_checksum_is_erofs_utils_crc32c() {
        // RFC 3720's check value: CRC32C("123456789") = 0xE3069283,
        // which is the raw value inverted.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }
}
