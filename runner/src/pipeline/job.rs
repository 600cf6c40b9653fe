//! The protocol between the parent and the staging step.
//!
//! The parent ([`super::launch`]) writes a [`StageJob`] as JSON to
//! `job.json` in its private temporary directory and re-executes itself in
//! the sandbox as `rootbox __stage JOB`; the staging step
//! ([`super::stage`]) writes a [`StageResult`] as JSON to the file the job
//! names and exits 0 when the filesystem's tool made an image. Without a user namespace
//! (`--no-userns`) the parent runs the same step in its own process, with
//! the same two records.

use std::path::PathBuf;

use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Compress, Uuid};
use serde::{Deserialize, Serialize};

use super::request::StoreStaging;

/// What the parent hands to the staging step. Planning happens there,
/// inside the namespace, because only there do sources look as mkfs will
/// see them: owners mapped (or the overflow id), ACL ids translated, and
/// directories of subordinate ids readable.
#[derive(Debug, Serialize, Deserialize)]
pub struct StageJob {
    /// The (empty) directory the staging tmpfs is mounted on.
    #[serde(with = "path_bytes")]
    pub stage_dir: PathBuf,
    /// One per subvolume.
    pub roots: Vec<Root>,
    pub store_paths: Vec<PathBuf>,
    /// The registration file (already rewritten for the image) and where
    /// it goes in the staging tree.
    pub registration: Option<(PathBuf, PathBuf)>,
    pub staging: StoreStaging,
    /// What makes the image: the filesystem's backend's job.
    pub make: MakeJob,
    /// Where to write the [`StageResult`].
    #[serde(with = "path_bytes")]
    pub result: PathBuf,
    /// Scratch space for copies; emptied when the job ends (its files may
    /// belong to subordinate ids the caller cannot delete outside).
    #[serde(with = "path_bytes")]
    pub scratch: PathBuf,
    /// No user namespace (`--no-userns`): no mounts; everything is copied
    /// into `stage_dir` (on disk) as the caller.
    pub direct: bool,
    /// Reproducible image: staged atimes set to mtimes.
    pub reproducible: bool,
    /// Everything is copied into the staging tmpfs in sorted order:
    /// mkfs.btrfs before 7.3 numbers inodes in the order the staging tree
    /// lists. Only for an explicit `--reproducible`.
    pub sorted_copy: bool,
    /// The epoch mkfs.btrfs ≥ 7.3 is given with [`MkfsJob::deterministic`]
    /// (None: the newest source mtime, known after the plan).
    pub epoch: Option<i64>,
}

/// A subtree to stage: `src` on the host becomes `dst` in the staging tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    pub src: Option<PathBuf>,
    pub dst: PathBuf,
    /// Paths relative to `dst` that stay empty directories (mount points
    /// of deeper subvolumes).
    pub masked: Vec<String>,
    /// A path relative to `dst` that receives the store paths.
    pub store: Option<PathBuf>,
}

/// The mkfs.btrfs run, but for the size, which follows from the content
/// ([`super::mkfs::plan`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct MkfsJob {
    pub program: PathBuf,
    pub label: Option<String>,
    pub uuid: Option<Uuid>,
    pub device_uuid: Option<Uuid>,
    pub compress: Option<Compress>,
    pub subvol_args: Vec<String>,
    pub inode_flag_args: Vec<String>,
    pub size: Size,
    pub headroom: ByteSize,
    pub output: PathBuf,
    /// mkfs.btrfs ≥ 7.3 for a reproducible image: it orders `--rootdir`
    /// itself and takes its times and UUIDs from SOURCE_DATE_EPOCH and
    /// DETERMINISTIC_SEED=1 (with `-U`), so the sources can stay bound.
    pub deterministic: bool,
    /// `--reflink`: clone the data ([`super::mkfs::job`] decided); the
    /// registration is then staged in scratch space, not the tmpfs.
    pub reflink: bool,
}

/// What the staging step reports back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StageResult {
    pub plan_secs: f64,
    pub stage_secs: f64,
    pub copy_secs: f64,
    pub mkfs_secs: f64,
    /// Removing the copies from scratch space.
    pub cleanup_secs: f64,
    pub counts: Counts,
    pub copied_bytes: u64,
    /// The owners the staged tree holds: what verification allows.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// Sources whose owner does not map (a few, for messages).
    pub unmapped: Vec<PathBuf>,
    /// Device nodes (staging path: subvolume/…, rdev) to fix in the image.
    pub devices: Vec<(PathBuf, u64)>,
    /// Without a namespace: device nodes staged as FIFOs (or not staged)
    /// and file capabilities not set, for the fix-up.
    #[serde(default)]
    pub specials: crate::fs::specials::Specials,
    /// The newest mtime among the sources (a reproducible build's default epoch).
    /// mkfs.btrfs fixed the inode order itself ([`MkfsJob::deterministic`]).
    pub mkfs_orders: bool,
    /// The sources were staged as a sorted copy ([`StageJob::sorted_copy`]).
    pub sorted_copy: bool,
    pub max_mtime: i64,
    /// How the filesystem's tool ended (128+N for a signal; `None`: it
    /// did not run) and what it said.
    pub tool_status: Option<i32>,
    pub tool_output: String,
    /// What the ext4, erofs or squashfs step did (`crate::fs`).
    pub made: Option<crate::fs::Made>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

/// What the planner's walk found, for the report and the size estimate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Entries (files, directories, links, ...) that reach the image.
    pub entries: u64,
    /// Bytes of regular-file content that reach the image.
    pub bytes: u64,
    /// Bytes that will be copied into scratch space.
    pub copied_bytes: u64,
    /// Entries that will be copied.
    pub copied_entries: u64,
    /// Bytes that reach mkfs through bind mounts, without a copy.
    pub bound_bytes: u64,
    /// Bind mounts made.
    pub binds: u64,
    /// Entries bound although their owner does not map: given to root in
    /// the image after mkfs.
    pub rewrite_entries: u64,
}

/// The staging step's job for the filesystem: what it runs on the sealed
/// staging tree to make the image.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MakeJob {
    /// mkfs.btrfs on the whole staging tree (one directory per subvolume).
    Btrfs(MkfsJob),
    /// ext4, erofs or squashfs from the layout's one root (`crate::fs`).
    Tree(crate::fs::StagedJob),
    /// vfat from the layout's one root (`crate::fs::vfat`).
    Vfat(VfatJob),
}

/// The staging step's job for vfat: what `crate::fs::vfat::make_in`
/// needs besides the staged tree.
#[derive(Debug, Serialize, Deserialize)]
pub struct VfatJob {
    /// The image file (the parent's unnamed file, as `/proc/self/fd/N`).
    #[serde(with = "path_bytes")]
    pub image: std::path::PathBuf,
    /// A fixed size, or None to fit the files plus `headroom`.
    pub size: Option<u64>,
    pub headroom: u64,
    pub label: Option<String>,
    pub volume_id: u32,
    /// A reproducible image: its times (None: the newest source mtime).
    pub reproducible: Option<Option<i64>>,
}

impl MakeJob {
    /// What makes the image, for messages.
    pub fn tool(&self) -> String {
        match self {
            MakeJob::Btrfs(m) => m.program.display().to_string(),
            MakeJob::Tree(t) => format!("the {} tools", t.filesystem),
            MakeJob::Vfat(_) => "mkfs.vfat and mtools".to_string(),
        }
    }

    /// mkfs orders `--rootdir` itself and takes its times and UUIDs from
    /// the environment (mkfs.btrfs ≥ 7.3, reproducible builds).
    /// vfat: mtools is given the files in sorted order, the times of
    /// SOURCE_DATE_EPOCH and a volume id from the seed.
    pub fn orders_itself(&self) -> bool {
        match self {
            MakeJob::Btrfs(m) => m.deterministic,
            MakeJob::Tree(_) => false,
            MakeJob::Vfat(_) => true,
        }
    }

    /// mkfs clones the data from the staged files (`--reflink`): copies
    /// then go to scratch space, not the tmpfs.
    pub fn clones(&self) -> bool {
        matches!(self, MakeJob::Btrfs(m) if m.reflink)
    }
}

/// Paths of the staging job as bytes: file names need not be UTF-8
/// (serde_json refuses a non-UTF-8 `PathBuf`).
pub mod path_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(p.as_os_str().as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(PathBuf::from(OsString::from_vec(Vec::<u8>::deserialize(
            d,
        )?)))
    }
}
