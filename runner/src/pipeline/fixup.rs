//! After mkfs: the fix-ups in the image, made with the in-place rewriter of
//! `rootbox-btrfs` ([`run`]), in this order:
//!
//! 1. *unmapped owners*: content whose owner does not map was bind-staged
//!    anyway (zero copy) and reached the image as the overflow id: it
//!    becomes root's, without set-id bits (a setuid file of an unknown user
//!    never becomes setuid root). In the namespace's view such an owner is
//!    exactly the overflow id, which the sandbox keeps out of every map, so
//!    nothing else is touched. Without a namespace the caller's ids play
//!    that part;
//! 2. *device numbers*: mkfs.btrfs (6.14) records rdev 0; the staged
//!    nodes' real numbers go back in; a node a copy staged as a FIFO
//!    (without a namespace, or a sorted copy in one) becomes the node, and
//!    a capability staged under `user.rootbox.fscaps` becomes
//!    `security.capability` (`crate::fs::specials`);
//! 3. *the ownership manifest* (`--owners`): its rules decide; every rule
//!    must match a path of the image;
//! 4. *tarball owners*: a tar rootfs's headers give owners and modes,
//!    yielding to the manifest's rules;
//! 5. *the reproducible pass*: every atime the mtime, times clamped, the
//!    UUIDs mkfs picked at random derived from the seed, leftovers zeroed;
//!    after mkfs.btrfs ≥ 7.3 (given the epoch and a seeded `-U`) only the
//!    root items' times are clamped (mkfs set the inodes').
//!
//! 1–3 are one pass over the inodes, 4 and 5 one each.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rootbox_btrfs::{InodeChange, InodeTimes, Rewriter};
use rootbox_images::layout::Layout;
use rootbox_images::owners::Manifest;
use serde::Serialize;

use super::ids::{overflow_ids, strip_setid};
use super::inputs::Inputs;
use super::job::StageResult;
use super::launch::Staged;
use super::tarball::TarOwners;
use super::verify::{by_subvol, image_path};
use crate::fs::specials::placeholder;
use crate::fs::S_IFMT;
use crate::reproducible::Reproducible;

/// What a reproducible image was made with.
#[derive(Debug, Clone, Serialize)]
pub struct ReproducibleReport {
    pub epoch: i64,
    pub seed: String,
    /// What asked for it: "--reproducible" or "SOURCE_DATE_EPOCH".
    pub requested_by: &'static str,
    /// What fixed the inode order: "mkfs.btrfs" (7.3 or newer, sources
    /// bound), "sorted copy" (older mkfs and --reproducible: the content
    /// copied into the staging tmpfs) or "sources" (older mkfs and
    /// SOURCE_DATE_EPOCH alone: bound, so the order follows the sources).
    pub inode_order: &'static str,
    /// Bytes copied for it: the sorted copy; 0 when bound.
    pub copied_bytes: u64,
    /// The pass after mkfs: "full" (every inode's times clamped, the
    /// UUIDs derived, unused space zeroed) or "root items" (after
    /// mkfs.btrfs ≥ 7.3, which set every inode's times: the same pass
    /// without reading the inodes, the same image).
    pub pass: &'static str,
}

/// What the fix-ups did.
#[derive(Debug, Default)]
pub struct FixUps {
    /// Inodes changed (an inode changed twice counts twice).
    pub rewritten: u64,
    pub secs: f64,
    /// Set for a reproducible image.
    pub reproducible: Option<ReproducibleReport>,
}

/// Runs the fix-ups the build needs on `image`, staged as `staged` says
/// (without a user namespace the caller's ids become root's);
/// `reproducible`: the pass's options and seed.
pub fn run(
    image: &Path,
    inputs: &Inputs,
    tar: Option<&TarOwners>,
    staged: &Staged,
    reproducible: Option<(&Reproducible, &str)>,
) -> Result<FixUps> {
    let (direct, staged) = (staged.direct, &staged.result);
    let mut done = FixUps::default();
    let manifest = inputs.manifest.as_ref();
    let caller = direct.then(|| {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    });
    if staged.counts.rewrite_entries > 0
        || !staged.devices.is_empty()
        || manifest.is_some()
        || caller.is_some()
    {
        let t = Instant::now();
        let n = owners_and_devices(image, &inputs.layout, staged, manifest, caller)?;
        tracing::debug!(
            "rewrite: {} inodes of unmapped owners given to root, {} device numbers set, {} inodes per the ownership manifest",
            n.owners,
            n.devices,
            n.manifest
        );
        done.rewritten += n.owners + n.devices + n.manifest;
        done.secs += t.elapsed().as_secs_f64();
    }
    // After the rewrite above (which, without a namespace, gives the
    // caller's ids to root) and yielding to the manifest's rules.
    if let Some(o) = tar {
        let t = Instant::now();
        let n = tar_owners(image, &inputs.layout, o, manifest)?;
        tracing::debug!("tar rootfs: {n} inodes given the archive's owners and modes");
        done.rewritten += n;
        done.secs += t.elapsed().as_secs_f64();
    }
    if let Some((r, seed)) = reproducible {
        let t = Instant::now();
        let epoch = r.epoch.unwrap_or(staged.max_mtime);
        // mkfs.btrfs ≥ 7.3 was given the epoch and a seeded -U: the inodes'
        // times are set; the root items, the UUIDs and leftovers are not.
        let pass = make_reproducible(image, epoch, seed, staged.mkfs_orders)?;
        done.secs += t.elapsed().as_secs_f64();
        tracing::debug!(
            "reproducible ({pass} pass): times clamped to {epoch}, UUIDs derived from the seed"
        );
        let (inode_order, copied_bytes) = match (staged.mkfs_orders, staged.sorted_copy) {
            (true, _) => ("mkfs.btrfs", 0),
            (false, true) => ("sorted copy", staged.copied_bytes),
            (false, false) => ("sources", 0),
        };
        done.reproducible = Some(ReproducibleReport {
            epoch,
            seed: seed.to_string(),
            requested_by: if r.explicit {
                "--reproducible"
            } else {
                "SOURCE_DATE_EPOCH"
            },
            inode_order,
            copied_bytes,
            pass,
        });
    }
    Ok(done)
}

/// Inodes changed by [`owners_and_devices`], by cause.
#[derive(Debug, Default)]
struct Fixed {
    owners: u64,
    devices: u64,
    manifest: u64,
}

/// Unmapped owners → root, device numbers, the ownership manifest: one
/// pass over every subvolume's inodes.
fn owners_and_devices(
    image: &Path,
    layout: &Layout,
    staged: &StageResult,
    manifest: Option<&Manifest>,
    caller: Option<(u32, u32)>,
) -> Result<Fixed> {
    // Without a namespace (--no-userns) the caller's ids play the part the
    // overflow ids play in one: they become root's.
    let (ou, og) = caller.unwrap_or_else(overflow_ids);
    let devs_by_subvol =
        by_subvol((staged.devices.iter()).map(|(p, r)| (p.as_os_str().as_bytes(), *r)));
    // Without a namespace: FIFOs that become device nodes, placeholders
    // that become security.capability (`crate::fs::specials`).
    let specials = &staged.specials;
    let nodes_by_subvol =
        by_subvol((specials.devices.iter()).map(|d| (&d.path[..], (d.mode & S_IFMT, d.rdev))));
    let caps_by_subvol = by_subvol(specials.caps.iter().map(|c| (&c.path[..], ())));
    let cap_placeholder = placeholder(None).map(str::as_bytes);
    let mut rw = Rewriter::open(image).context("opening the image for the rewrite")?;
    let subvols = rw.image().subvolumes().context("listing subvolumes")?;
    let mut fixed = Fixed::default();
    let mut matched = vec![false; manifest.map_or(0, |m| m.rules.len())];
    fixed.owners += top_level_owners(&mut rw, (ou, og))?;
    for planned in layout.subvolumes() {
        let Some(sv) = subvols.iter().find(|s| s.path == planned.name.as_bytes()) else {
            continue;
        };
        let devs = devs_by_subvol.get(planned.name.as_bytes());
        let nodes = nodes_by_subvol.get(planned.name.as_bytes());
        let caps = caps_by_subvol.get(planned.name.as_bytes());
        rw.update_inodes(sv.id, &mut |v| {
            let uid_replaced = v.uid == ou;
            let gid_replaced = v.gid == og;
            let node = nodes.and_then(|d| v.path.and_then(|p| d.get(p))).copied();
            let rdev = devs.and_then(|d| v.path.and_then(|p| d.get(p))).copied();
            let rdev = node.map(|(_, r)| r).or(rdev);
            let cap = caps.is_some_and(|c| v.path.is_some_and(|p| c.contains_key(p)));
            let rule = manifest.and_then(|m| {
                let path = image_path(&planned.mountpoint, v.path?);
                m.lookup(&path)
            });
            if !uid_replaced && !gid_replaced && rdev.is_none() && rule.is_none() && !cap {
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
                file_type: node.map(|(kind, _)| kind),
                rename_xattr: cap
                    .then_some(cap_placeholder)
                    .flatten()
                    .map(|from| (from, &b"security.capability"[..])),
            })
        })
        .with_context(|| format!("rewriting subvolume {}", planned.name))?;
    }
    if let Some(m) = manifest {
        every_rule_matched(m, &matched)?;
    }
    rw.commit().context("writing the rewritten image")?;
    Ok(fixed)
}

/// The top level's owners `(ou, og)` given to root; returns how many
/// inodes changed. The top level holds only the subvolumes' directory
/// entries; its root directory is the staging root (the caller's, without
/// a namespace).
fn top_level_owners(rw: &mut Rewriter, (ou, og): (u32, u32)) -> Result<u64> {
    let mut owners = 0;
    rw.update_inodes(5, &mut |v| {
        let (u, g) = (v.uid == ou, v.gid == og);
        (u || g).then(|| {
            owners += 1;
            InodeChange {
                uid: u.then_some(0),
                gid: g.then_some(0),
                mode: None,
                rdev: None,
                times: None,
                ..InodeChange::default()
            }
        })
    })
    .context("rewriting the top level")?;
    Ok(owners)
}

/// Every rule of the ownership manifest matched a path of the image
/// (`matched`, by rule), else an error naming the rules' lines.
fn every_rule_matched(m: &Manifest, matched: &[bool]) -> Result<()> {
    let missing: Vec<String> = m
        .rules
        .iter()
        .zip(matched)
        .filter(|(_, hit)| !**hit)
        .map(|(r, _)| {
            format!(
                "line {}: {} matches nothing in the image",
                r.line, r.pattern
            )
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "the ownership manifest names paths the image does not have (a typo, or a path \
             outside every subvolume?):\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Gives every inode that came from the archive the header's
/// owner, group and permission bits. Rules of an ownership manifest that
/// match a path win over the archive (they were applied already by the
/// rewrite; the archive's mode stays where a rule gives none). Returns the
/// number of inodes changed.
pub fn tar_owners(
    image: &Path,
    layout: &Layout,
    owners: &TarOwners,
    manifest: Option<&Manifest>,
) -> Result<u64> {
    let mut rw =
        Rewriter::open(image).context("opening the image to apply the archive's owners")?;
    let subvols = rw.image().subvolumes().context("listing subvolumes")?;
    let mut changed = 0u64;
    let ids: HashMap<&str, u64> = layout
        .subvolumes()
        .iter()
        .filter_map(|p| {
            subvols
                .iter()
                .find(|s| s.path == p.name.as_bytes())
                .map(|s| (p.mountpoint.as_str(), s.id))
        })
        .collect();
    for planned in layout.subvolumes() {
        let Some(&id) = ids.get(planned.mountpoint.as_str()) else {
            continue;
        };
        let stats = rw
            .update_inodes(id, &mut |v| {
                let path = image_path(&planned.mountpoint, v.path?);
                let e = owners.entries.get(&path)?;
                let rule = manifest.and_then(|m| m.lookup(&path)).map(|(_, r)| r);
                let (uid, gid, mode) = match rule {
                    Some(r) => (r.uid, r.gid, r.mode.unwrap_or(e.mode)),
                    None => (e.uid, e.gid, e.mode),
                };
                // A symlink's bits are always 0777 (a header may say otherwise).
                let is_link = v.mode & libc::S_IFMT == libc::S_IFLNK;
                Some(InodeChange {
                    uid: Some(uid),
                    gid: Some(gid),
                    mode: (!is_link).then_some(mode & 0o7777),
                    rdev: None,
                    times: None,
                    ..InodeChange::default()
                })
            })
            .with_context(|| format!("applying the archive's owners to {}", planned.name))?;
        changed += stats.inodes_changed;
    }
    rw.commit()
        .context("writing the archive's owners to the image")?;
    Ok(changed)
}

/// Gives every inode its mtime as atime, clamps every time to `epoch`,
/// derives the UUIDs mkfs picked at random from `seed`, zeroes what mkfs
/// left in freed blocks; after a `mkfs_deterministic` mkfs (≥ 7.3, given
/// the epoch and a seeded `-U`) the clamp is of the root items only (mkfs
/// set the inodes' times): the same image. Returns the pass's name for
/// the report.
fn make_reproducible(
    image: &Path,
    epoch: i64,
    seed: &str,
    mkfs_deterministic: bool,
) -> Result<&'static str> {
    let mut rw = Rewriter::open(image).context("opening the image to make it reproducible")?;
    // Staging gives every entry its mtime as atime, but a read of the
    // staged tree moves it where that tree is writable (without a
    // namespace it is a copy on disk; a namespace seals it read-only):
    // mkfs.btrfs 6.14 walks the tree twice, and its first walk's readdir
    // moves the atime of a directory its second walk records (strace).
    for id in rw.fs_tree_ids().context("listing subvolumes")? {
        rw.update_inodes(id, &mut |v| {
            (v.atime != v.mtime).then(|| InodeChange {
                times: Some(InodeTimes {
                    atime: Some(v.mtime),
                    ..InodeTimes::default()
                }),
                ..InodeChange::default()
            })
        })
        .context("setting every atime to the mtime")?;
    }
    let pass = if mkfs_deterministic {
        rw.make_reproducible_after_deterministic_mkfs(epoch, seed.as_bytes())
            .context("making the image reproducible")?;
        "root items"
    } else {
        rw.make_reproducible(epoch, seed.as_bytes())
            .context("making the image reproducible")?;
        "full"
    };
    rw.commit().context("writing the reproducible image")?;
    Ok(pass)
}

/// A host dev_t in btrfs's encoding (major << 20 | minor).
fn encode(rdev: u64) -> u64 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    rootbox_btrfs::encode_rdev(major, minor).unwrap_or(0)
}
