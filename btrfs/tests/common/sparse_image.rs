//! Small btrfs images for fuzzing, and the walk that must never panic.
//!
//! Shared by `btrfs/tests/btrfs_mutations.rs` and the cargo-fuzz target
//! `fuzz/fuzz_targets/btrfs_image.rs` (which includes this file with
//! `#[path]`), so that the deterministic mutations in CI and the fuzzer
//! run the same code. It depends only on `rootbox_btrfs` and `crc32c`.
//!
//! A real image is mostly zeros: only the superblock and the tree blocks
//! the reader visits matter. A *sparse image* keeps just those bytes:
//!
//! ```text
//! input  := flags:u8 extent*
//! extent := offset:u32le len:u16le bytes[len]     (a cut-off tail is ignored)
//! ```
//!
//! Written out, every extent lands at its offset of an otherwise empty
//! (sparse) file, which goes on to the next 64 KiB boundary after the
//! last extent (the largest nodesize: a tree block whose zero tail was
//! left out is still there in full). With bit 0 of `flags` set, the crc32c of the superblock
//! and of every tree block an extent touches (a nodesize-aligned block
//! carrying the superblock's fsid) is recomputed after the bytes are
//! placed, so that a mutation reaches the parsers behind the checksum
//! check instead of stopping at it.

#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rootbox_btrfs::{listing, FileKind, Image, ReadError};

/// `flags` bit: recompute checksums after placing the extents.
pub const FIX_CHECKSUMS: u8 = 1;

/// Where the primary superblock is, and its size.
const SUPER_OFFSET: u64 = 0x1_0000;
const SUPER_SIZE: usize = 4096;
/// `btrfs_super_block`: `fsid` (16 bytes) at 0x20, `nodesize` at 0x94,
/// `_BHRfS_M` at 0x40; a tree block's `btrfs_header` has its `fsid` at
/// 0x20 too. The crate's own layout module is private; these are the
/// kernel's offsets, checked by the round trip in the tests.
const FSID_AT: usize = 0x20;
const MAGIC_AT: usize = 0x40;
const NODESIZE_AT: usize = 0x94;
/// The largest nodesize.
const MAX_NODESIZE: u64 = 65536;
/// Checksums cover everything after the 32-byte checksum field.
const CSUM_SIZE: usize = 32;

/// Gaps of at least this many zero bytes split an extent when encoding.
const ZERO_GAP: usize = 16;

/// Encode `ranges` (offset in the image, bytes) as a sparse image.
/// Zero runs inside a range are left out; long ranges are split.
pub fn encode(ranges: &[(u64, Vec<u8>)], flags: u8) -> Vec<u8> {
    let mut out = vec![flags];
    for (offset, bytes) in ranges {
        let mut i = 0;
        while i < bytes.len() {
            // Skip zeros, then take up to the next long zero run.
            while i < bytes.len() && bytes[i] == 0 {
                i += 1;
            }
            let start = i;
            let mut zeros = 0;
            while i < bytes.len() && i - start < usize::from(u16::MAX) {
                zeros = if bytes[i] == 0 { zeros + 1 } else { 0 };
                i += 1;
                if zeros >= ZERO_GAP {
                    break;
                }
            }
            let end = i - zeros;
            if end > start {
                let at = u32::try_from(offset + start as u64).expect("offset below 4 GiB");
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&((end - start) as u16).to_le_bytes());
                out.extend_from_slice(&bytes[start..end]);
            }
        }
    }
    out
}

/// The extents of a sparse image (a cut-off last extent is dropped).
pub fn extents(input: &[u8]) -> (u8, Vec<(u64, &[u8])>) {
    let Some((&flags, mut rest)) = input.split_first() else {
        return (0, Vec::new());
    };
    let mut out = Vec::new();
    while rest.len() >= 6 {
        let offset = u32::from_le_bytes(rest[..4].try_into().unwrap());
        let len = usize::from(u16::from_le_bytes(rest[4..6].try_into().unwrap()));
        let Some(bytes) = rest.get(6..6 + len) else {
            break;
        };
        out.push((u64::from(offset), bytes));
        rest = &rest[6 + len..];
    }
    (flags, out)
}

/// Write the sparse image `input` to `path` (replacing what is there).
pub fn write(input: &[u8], path: &Path) -> io::Result<()> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let (flags, extents) = extents(input);
    let mut end = 0;
    for (offset, bytes) in &extents {
        file.write_all_at(bytes, *offset)?;
        end = end.max(offset + bytes.len() as u64);
    }
    file.set_len(end.next_multiple_of(MAX_NODESIZE))?;
    if flags & FIX_CHECKSUMS != 0 {
        fix_checksums(&file, &extents)?;
    }
    Ok(())
}

/// Recompute the crc32c of every tree block the extents touch, then of
/// the superblock.
fn fix_checksums(file: &File, extents: &[(u64, &[u8])]) -> io::Result<()> {
    let mut sb = vec![0u8; SUPER_SIZE];
    if file.read_exact_at(&mut sb, SUPER_OFFSET).is_err()
        || &sb[MAGIC_AT..MAGIC_AT + 8] != b"_BHRfS_M"
    {
        return Ok(());
    }
    let nodesize = u32::from_le_bytes(sb[NODESIZE_AT..NODESIZE_AT + 4].try_into().unwrap());
    if nodesize.is_power_of_two() && (4096..=MAX_NODESIZE as u32).contains(&nodesize) {
        let n = u64::from(nodesize);
        let mut block = vec![0u8; nodesize as usize];
        let mut done = std::collections::BTreeSet::new();
        for (offset, bytes) in extents {
            let first = offset / n;
            let last = (offset + bytes.len().max(1) as u64 - 1) / n;
            for start in (first..=last).map(|b| b * n) {
                let overlaps_super =
                    start < SUPER_OFFSET + SUPER_SIZE as u64 && SUPER_OFFSET < start + n;
                if overlaps_super || !done.insert(start) {
                    continue;
                }
                if file.read_exact_at(&mut block, start).is_err()
                    || block[FSID_AT..FSID_AT + 16] != sb[FSID_AT..FSID_AT + 16]
                {
                    continue;
                }
                seal(&mut block);
                file.write_all_at(&block, start)?;
            }
        }
    }
    seal(&mut sb);
    file.write_all_at(&sb, SUPER_OFFSET)
}

fn seal(block: &mut [u8]) {
    let crc = crc32c::crc32c(&block[CSUM_SIZE..]);
    block[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Everything a caller of the reader can ask, as `rootbox inspect` asks
/// it: open, the default subvolume, every subvolume and its listing
/// lines, the full walk of each (listing line and JSON of every entry,
/// its xattrs and symlink target), a look-up by path of the first
/// entries, and the blocks of the root and chunk trees. Returns the
/// number of entries walked.
pub fn exercise(path: &Path) -> Result<usize, ReadError> {
    let image = Image::open(path)?;
    let _ = listing::info_json(image.info());
    let default = image.default_subvolume()?;
    let mut walked = 0;
    for sv in image.subvolumes()? {
        let _ = listing::subvolume_line(&sv, default);
        let _ = listing::subvolume_json(&sv, default);
        let mut paths = Vec::new();
        image.walk(sv.id, &mut |e| {
            walked += 1;
            let _ = listing::entry_line(e);
            let _ = listing::entry_json(e);
            let _ = e.device_numbers();
            for (name, value) in &e.xattrs {
                if e.xattr(name) != Some(value.as_slice()) {
                    return Err(ReadError::Corrupt(format!(
                        "xattr {} of {} does not read back",
                        listing::escape(name),
                        listing::escape(&e.path)
                    )));
                }
            }
            if (e.kind == FileKind::Symlink) != e.symlink_target.is_some() {
                return Err(ReadError::Corrupt(format!(
                    "{}: symlink target and kind disagree",
                    listing::escape(&e.path)
                )));
            }
            if paths.len() < 64 {
                paths.push(e.path.clone());
            }
            Ok(())
        })?;
        for p in &paths {
            image.lookup(sv.id, p)?;
        }
    }
    image.tree_blocks(1)?;
    image.tree_blocks(3)?;
    Ok(walked)
}

/// Short name of an outcome of [`exercise`], for tallies.
pub fn outcome(r: &Result<usize, ReadError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ReadError::BadBlock { .. }) => "bad block",
        Err(ReadError::Corrupt(_)) => "corrupt",
        Err(ReadError::UnmappedLogical(_)) => "unmapped",
        Err(ReadError::NotFound(_)) => "not found",
        Err(ReadError::NoSuchSubvolume(_)) => "no such subvolume",
        Err(ReadError::Unsupported(_)) => "unsupported",
        Err(ReadError::Io { .. }) => "io",
        Err(ReadError::NotBtrfs) => "not btrfs",
        Err(ReadError::BadBlockChecksum { .. }) => "bad checksum",
        Err(ReadError::BadSuperblockChecksum) => "bad superblock checksum",
        Err(ReadError::UnsupportedChecksum(_)) => "unsupported checksum",
        Err(_) => "other",
    }
}
