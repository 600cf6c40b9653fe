//! The result of a build: the [`Report`] (`--json` prints it) and the
//! summary `rootbox build` prints otherwise.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rootbox_images::fs::btrfs::ReflinkDecision;
use rootbox_images::fs::Filesystem as TreeFilesystem;
use rootbox_images::spec::Filesystem;
use serde::Serialize;

use super::fixup::FixUps;
use super::fixup::ReproducibleReport;
use super::inputs::Staging;
use super::launch::Staged;
use super::request::BuildRequest;
use super::verify::{SubvolReport, Verified};

/// The JSON result of a build: what every filesystem reports, then the
/// backend's own details under the filesystem's name ([`Details`]).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The filesystem made.
    pub filesystem: Filesystem,
    pub image: PathBuf,
    pub size_bytes: u64,
    /// The filesystem UUID, read back from the image (squashfs has none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    pub label: String,
    pub map: String,
    /// `{"used": true}`, or `{"used": false, "reason": "…"}`: the build
    /// ran without a user namespace, and why.
    pub namespace: super::launch::Namespace,
    pub subvolumes: Vec<SubvolReport>,
    pub entries: u64,
    pub content_bytes: u64,
    pub copied_bytes: u64,
    pub bound_bytes: u64,
    pub binds: u64,
    /// Inodes whose owner (unmapped in the namespace) or device number was
    /// fixed in the image after mkfs.
    pub rewritten_inodes: u64,
    pub store_paths: usize,
    pub registration: Option<String>,
    pub owners: Owners,
    pub timings: Timings,
    pub left_out: Vec<String>,
    pub warnings: Vec<String>,
    pub verified: bool,
    /// The backend's own details: `"btrfs": {…}`, `"ext4": {…}`, …
    #[serde(flatten)]
    pub details: Details,
}

/// The image's UUID and label, as the backend read them back.
pub struct Identity {
    /// `None`: the filesystem has no UUID (squashfs).
    pub uuid: Option<String>,
    pub label: String,
}

/// What only one filesystem's backend reports, under its name.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Details {
    Btrfs(BtrfsReport),
    Ext4(TreeReport),
    Erofs(TreeReport),
    Squashfs(TreeReport),
    Vfat(VfatReport),
}

/// What the report says of a vfat image (`"vfat"`).
#[derive(Debug, Serialize)]
pub struct VfatReport {
    /// The Debian package of the tools that made the image.
    pub tool: &'static str,
    /// mkfs.vfat's version.
    pub tool_version: String,
    /// The volume id, as `/dev/disk/by-uuid` shows it (`2178-694E`).
    pub volume_id: String,
    /// 12, 16 or 32, as mkfs.vfat chose for the size.
    pub fat_size: u8,
    /// Files and directories read back equal to the rootfs.
    pub verified_files: usize,
    pub verified_dirs: usize,
    /// A reproducible image: the time of every entry.
    pub reproducible_epoch: Option<i64>,
}

/// The btrfs backend's part of the report (`"btrfs"`).
#[derive(Debug, Serialize)]
pub struct BtrfsReport {
    pub mkfs_version: String,
    /// The features mkfs.btrfs enabled, from the image's superblock
    /// (`block-group-tree`: the default since btrfs-progs 6.19; kernels
    /// before 6.1 cannot mount such an image read-write).
    pub mkfs_features: Vec<String>,
    /// Whether mkfs.btrfs cloned the data (`--reflink`), and why not.
    pub reflink: ReflinkDecision,
    /// Set for a reproducible image.
    pub reproducible: Option<ReproducibleReport>,
}

/// The tree backend's part of the report (`"ext4"`, `"erofs"` or
/// `"squashfs"`).
#[derive(Debug, Serialize)]
pub struct TreeReport {
    /// The Debian package of the tool that made the image.
    pub tool: &'static str,
    /// Its version.
    pub tool_version: String,
    /// Inodes whose unmapped owner or group was given to root.
    pub unmapped_given_to_root: usize,
    /// Paths the ownership manifest changed.
    pub manifest_paths: usize,
    /// Paths compared with the staged tree in the staging step.
    pub verified_paths: usize,
    /// A reproducible image: the epoch of its times (`None`: the newest
    /// source mtime).
    pub reproducible_epoch: Option<u64>,
}

impl Details {
    /// The details of an ext4, erofs or squashfs image.
    pub fn tree(fs: TreeFilesystem, r: TreeReport) -> Details {
        match fs {
            TreeFilesystem::Ext4 => Details::Ext4(r),
            TreeFilesystem::Erofs => Details::Erofs(r),
            TreeFilesystem::Squashfs => Details::Squashfs(r),
        }
    }
}

/// Owners the image holds, read back by verification.
#[derive(Debug, Default, Serialize)]
pub struct Owners {
    pub uids: BTreeMap<u32, u64>,
    pub gids: BTreeMap<u32, u64>,
}

/// Seconds per phase.
#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub plan: f64,
    pub stage: f64,
    pub copy: f64,
    pub mkfs: f64,
    pub verify: f64,
    pub rewrite: f64,
    /// Removing scratch copies.
    pub cleanup: f64,
    pub total: f64,
}

/// What a finished build is reported from.
pub struct Built<'a> {
    pub request: &'a BuildRequest,
    /// The image's UUID and label, as read back.
    pub identity: Identity,
    pub details: Details,
    pub staging: &'a Staging,
    pub staged: &'a Staged,
    pub fixups: FixUps,
    pub verified: Option<Verified>,
    pub size_bytes: u64,
    pub warnings: Vec<String>,
    /// Seconds the parent spent resolving the inputs.
    pub resolve_secs: f64,
    pub total_secs: f64,
}

impl Report {
    /// The report of a build.
    pub fn new(b: Built) -> Report {
        let r = &b.staged.result;
        let counts = &r.counts;
        let (verified, owners, subvolumes, verify_secs) = match b.verified {
            Some(v) => (
                true,
                Owners {
                    uids: v.uids,
                    gids: v.gids,
                },
                v.subvolumes,
                v.secs,
            ),
            None => (false, Owners::default(), Vec::new(), 0.0),
        };
        Report {
            filesystem: b.request.spec.filesystem,
            image: b.request.output.clone(),
            size_bytes: b.size_bytes,
            uuid: b.identity.uuid.unwrap_or_default(),
            label: b.identity.label,
            map: format!("{:?}", b.request.options.map).to_lowercase(),
            namespace: b.staged.namespace.clone(),
            subvolumes,
            entries: counts.entries,
            content_bytes: counts.bytes,
            copied_bytes: r.copied_bytes,
            bound_bytes: counts.bound_bytes,
            binds: counts.binds,
            rewritten_inodes: b.fixups.rewritten,
            store_paths: b.staging.store_paths.len(),
            registration: b.staging.registration.clone(),
            owners,
            timings: Timings {
                plan: b.resolve_secs + r.plan_secs,
                stage: r.stage_secs,
                copy: r.copy_secs,
                mkfs: r.mkfs_secs,
                verify: verify_secs,
                rewrite: b.fixups.secs,
                cleanup: r.cleanup_secs,
                total: b.total_secs,
            },
            left_out: b.staging.left_out.clone(),
            warnings: b.warnings,
            verified,
            details: b.details,
        }
    }
}

/// The report as `rootbox build` prints it without `--json`.
pub fn print_summary(r: &Report) {
    println!(
        "image      {} ({}, {} bytes)",
        r.image.display(),
        r.filesystem,
        r.size_bytes
    );
    println!("uuid       {}   label {:?}", r.uuid, r.label);
    for s in &r.subvolumes {
        println!(
            "subvolume  {:<12} at {:<12} {:>7} entries {:>12} bytes{}",
            s.name,
            s.mountpoint,
            s.entries,
            s.bytes,
            if s.default { "  (default)" } else { "" }
        );
    }
    println!(
        "content    {} entries, {} bytes: {} bound ({} bind mounts), {} copied",
        r.entries, r.content_bytes, r.bound_bytes, r.binds, r.copied_bytes
    );
    let owners = |m: &std::collections::BTreeMap<u32, u64>| {
        m.iter()
            .map(|(id, n)| format!("{id}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "owners     uids {}   gids {}",
        owners(&r.owners.uids),
        owners(&r.owners.gids)
    );
    if let Some(reg) = &r.registration {
        println!("registration {reg} ({} store paths)", r.store_paths);
    }
    for l in &r.left_out {
        println!("left out   {l} (no subvolume covers it)");
    }
    match &r.details {
        Details::Btrfs(b) => {
            println!("made by    mkfs.btrfs {}", b.mkfs_version);
            println!("features   {}", b.mkfs_features.join(" "));
            match &b.reflink.reason {
                None => println!("reflink    data cloned from the sources (--reflink)"),
                Some(why) => println!("reflink    data copied: {why}"),
            }
        }
        Details::Ext4(t) | Details::Erofs(t) | Details::Squashfs(t) => {
            println!("made by    {} {}", t.tool, t.tool_version);
        }
        Details::Vfat(v) => {
            println!("made by    {} {}", v.tool, v.tool_version);
            println!("fat        FAT{}, volume id {}", v.fat_size, v.volume_id);
        }
    }
    let t = &r.timings;
    println!(
        "time       plan {:.2}s, stage {:.2}s, copy {:.2}s, mkfs {:.2}s, verify {:.2}s, total {:.2}s",
        t.plan, t.stage, t.copy, t.mkfs, t.verify, t.total
    );
    println!(
        "verified   {}",
        if r.verified && matches!(r.details, Details::Vfat(_)) {
            "every file read back equal to the rootfs (FAT has no owners)"
        } else if r.verified {
            "every owner is one the staged tree had; sshd/tmpfiles paths are safe"
        } else {
            "SKIPPED (--no-verify)"
        }
    );
}
