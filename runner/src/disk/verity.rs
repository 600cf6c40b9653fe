//! Between phases 2 and 3 of a disk: the dm-verity hash trees. A
//! partition whose content is `verityHash` gets the hash tree of its data
//! partition's filesystem, made by `veritysetup format` (cryptsetup-bin;
//! it works on plain files, without root) once that filesystem is built;
//! then, as systemd-repart does and the Discoverable Partitions
//! Specification asks, the data partition's GUID becomes the root hash's
//! first 128 bits and the hash partition's its last 128 bits, so the root
//! hash alone finds both.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use rootbox_images::disk::types::Guid;
use rootbox_images::disk::{Content, DiskSpec, Part};

use super::contents::{Holds, Made, Slot};
use super::inputs::Entropy;
use crate::fs::vfat::for_tools;

/// dm-verity's data and hash block size (repart's default too).
const BLOCK: u64 = 4096;

/// One data partition and its hash partition, made.
pub struct Pair {
    /// The data partition (index from 0).
    pub data: usize,
    /// The hash partition (index from 0).
    pub hash: usize,
    /// The root hash, lowercase hex.
    pub root_hash: String,
}

/// Makes every `verityHash` partition's content into `slots` (each was
/// left empty by the contents phase); returns the pairs made.
pub fn make_all(
    spec: &DiskSpec,
    slots: &mut [Slot],
    dir: &Path,
    entropy: &Entropy,
) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (hash, p) in spec.partitions.iter().enumerate() {
        let Some(Content::VerityHash(v)) = &p.content else {
            continue;
        };
        let data = spec
            .partitions
            .iter()
            .position(|q| q.name == v.data)
            .expect("checked when the spec was read");
        let title = Part::of(spec, hash);
        let Slot::Made(d) = &slots[data] else {
            bail!("{title}: its data partition {:?} has no content", v.data);
        };
        tracing::debug!("{title}: the dm-verity hash tree of {:?}", v.data);
        let (made, root_hash) =
            format(&d.file, d.len, dir, entropy, hash).with_context(|| title.to_string())?;
        slots[hash] = Slot::Made(made);
        pairs.push(Pair {
            data,
            hash,
            root_hash,
        });
    }
    Ok(pairs)
}

/// `veritysetup format` of `data` (`len` bytes) into an unnamed file in
/// `dir`, with a salt and superblock UUID from `entropy` (so a
/// reproducible disk gets the same tree twice).
fn format(
    data: &File,
    len: u64,
    dir: &Path,
    entropy: &Entropy,
    i: usize,
) -> Result<(Made, String)> {
    if len % BLOCK != 0 {
        bail!("the data partition's filesystem is {len} bytes, not a multiple of dm-verity's {BLOCK}-byte blocks");
    }
    let hash = crate::output::unnamed_scratch(dir)?;
    let salt: String = [
        entropy.bytes(&format!("verity salt {} a", i + 1)),
        entropy.bytes(&format!("verity salt {} b", i + 1)),
    ]
    .concat()
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    let uuid = Guid::from_random(entropy.bytes(&format!("verity uuid {}", i + 1)));
    let out = Command::new("veritysetup")
        .stdin(Stdio::null())
        .arg("format")
        .arg(format!("--data-block-size={BLOCK}"))
        .arg(format!("--hash-block-size={BLOCK}"))
        .arg(format!("--data-blocks={}", len / BLOCK))
        .arg(format!("--salt={salt}"))
        .arg(format!("--uuid={}", uuid.to_string().to_lowercase()))
        .arg(for_tools(data)?)
        .arg(for_tools(&hash)?)
        .output()
        .context("running veritysetup format (install cryptsetup-bin)")?;
    if !out.status.success() {
        bail!(
            "veritysetup format failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root_hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_lowercase())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("veritysetup format printed no SHA-256 root hash: {stdout}"))?;
    let len = hash.metadata()?.len();
    Ok((
        Made {
            file: hash,
            len,
            content_bytes: len,
            kept: None,
            holds: Holds::Raw,
        },
        root_hash,
    ))
}

/// `spec` with each pair's partition GUIDs taken from its root hash
/// (data: the first 128 bits, hash: the last), unless the spec gives
/// them.
pub fn with_guids<'a>(spec: &'a DiskSpec, pairs: &[Pair]) -> Cow<'a, DiskSpec> {
    if pairs.is_empty() {
        return Cow::Borrowed(spec);
    }
    let mut s = spec.clone();
    for p in pairs {
        let bytes: Vec<u8> = (0..32)
            .map(|k| u8::from_str_radix(&p.root_hash[2 * k..2 * k + 2], 16).expect("checked hex"))
            .collect();
        let first: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
        let last: [u8; 16] = bytes[16..].try_into().expect("16 bytes");
        s.partitions[p.data].guid.get_or_insert(Guid(first));
        s.partitions[p.hash].guid.get_or_insert(Guid(last));
    }
    Cow::Owned(s)
}
