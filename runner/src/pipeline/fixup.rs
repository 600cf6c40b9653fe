//! After mkfs: what the namespace could not express, fixed in the image
//! with the images crate's in-place rewrite.
//!
//! - Content whose owner does not map was bind-staged anyway (zero copy)
//!   and reached the image as the overflow id: it becomes root's, without
//!   set-id bits (a setuid file of an unknown user never becomes setuid
//!   root). In the namespace's view such an owner is exactly the overflow
//!   id, which the sandbox keeps out of every map, so nothing else is
//!   touched.
//! - Device nodes: mkfs.btrfs (6.14) records rdev 0; the staged nodes'
//!   real numbers go back in.
//! - The ownership manifest (`--owners`): its rules are applied last, so
//!   they decide; every rule must match a path of the image.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use rootbox_btrfs::{InodeChange, Rewriter};
use rootbox_images::layout::Layout;
use rootbox_images::owners::Manifest;

use super::stage::strip_setid;
use super::verify::image_path;

#[derive(Debug, Default)]
pub struct Fixed {
    pub owners: u64,
    pub devices: u64,
    pub manifest: u64,
}

fn overflow(file: &str) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

pub fn fix_image(
    image: &Path,
    layout: &Layout,
    devices: &[(PathBuf, u64)],
    manifest: Option<&Manifest>,
    caller: Option<(u32, u32)>,
) -> Result<Fixed> {
    // Without a namespace (--no-userns) the caller's ids play the part the
    // overflow ids play in one: they become root's.
    let (ou, og) = caller.unwrap_or((
        overflow("/proc/sys/kernel/overflowuid"),
        overflow("/proc/sys/kernel/overflowgid"),
    ));
    // Device nodes by subvolume name, then path inside it.
    let mut by_subvol: HashMap<Vec<u8>, HashMap<Vec<u8>, u64>> = HashMap::new();
    for (staged, rdev) in devices {
        let mut parts = staged.components();
        let Some(first) = parts.next() else { continue };
        let rel = parts.as_path().as_os_str().as_bytes().to_vec();
        by_subvol
            .entry(first.as_os_str().as_bytes().to_vec())
            .or_default()
            .insert(rel, *rdev);
    }
    let mut rw =
        Rewriter::open(image).map_err(|e| anyhow!("opening the image for the rewrite: {e}"))?;
    let subvols = rw
        .image()
        .subvolumes()
        .map_err(|e| anyhow!("listing subvolumes: {e}"))?;
    let mut fixed = Fixed::default();
    let mut matched = vec![false; manifest.map_or(0, |m| m.rules.len())];
    // The top level holds only the subvolumes' directory entries; its root
    // directory is the staging root (the caller's, without a namespace).
    rw.update_inodes(5, &mut |v| {
        let (u, g) = (v.uid == ou, v.gid == og);
        (u || g).then(|| {
            fixed.owners += 1;
            InodeChange {
                uid: u.then_some(0),
                gid: g.then_some(0),
                mode: None,
                rdev: None,
                times: None,
            }
        })
    })
    .map_err(|e| anyhow!("rewriting the top level: {e}"))?;
    for planned in layout.subvolumes() {
        let Some(sv) = subvols.iter().find(|s| s.path == planned.name.as_bytes()) else {
            continue;
        };
        let devs = by_subvol.get(planned.name.as_bytes());
        rw.update_inodes(sv.id, &mut |v| {
            let uid_replaced = v.uid == ou;
            let gid_replaced = v.gid == og;
            let rdev = devs.and_then(|d| v.path.and_then(|p| d.get(p))).copied();
            let rule = manifest.and_then(|m| {
                let path = image_path(&planned.mountpoint, v.path?);
                m.lookup(&path)
            });
            if !uid_replaced && !gid_replaced && rdev.is_none() && rule.is_none() {
                return None;
            }
            if uid_replaced || gid_replaced {
                fixed.owners += 1;
            }
            if rdev.is_some() {
                fixed.devices += 1;
            }
            // The caller's own set-id files stay set-id (as with a single-id
            // map); only those of unmapped owners lose the bits.
            let mut mode = if caller.is_some() {
                v.mode
            } else {
                strip_setid(v.mode, uid_replaced, gid_replaced)
            };
            let (mut uid, mut gid) = (uid_replaced.then_some(0), gid_replaced.then_some(0));
            if let Some((i, r)) = rule {
                matched[i] = true;
                fixed.manifest += 1;
                uid = Some(r.uid);
                gid = Some(r.gid);
                if let Some(m) = r.mode {
                    mode = (mode & !0o7777) | m;
                }
            }
            Some(InodeChange {
                uid,
                gid,
                mode: (mode != v.mode).then_some(mode & 0o7777),
                rdev: rdev.map(encode),
                times: None,
            })
        })
        .map_err(|e| anyhow!("rewriting subvolume {}: {e}", planned.name))?;
    }
    if let Some(m) = manifest {
        let missing: Vec<String> = m
            .rules
            .iter()
            .zip(&matched)
            .filter(|(_, hit)| !**hit)
            .map(|(r, _)| {
                format!(
                    "line {}: {} matches nothing in the image",
                    r.line, r.pattern
                )
            })
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "the ownership manifest names paths the image does not have (a typo, or a path \
                 outside every subvolume?):\n  {}",
                missing.join("\n  ")
            );
        }
    }
    rw.commit()
        .map_err(|e| anyhow!("writing the rewritten image: {e}"))?;
    Ok(fixed)
}

/// A host dev_t in btrfs's encoding (major << 20 | minor).
fn encode(rdev: u64) -> u64 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    rootbox_btrfs::encode_rdev(major, minor).unwrap_or(0)
}
