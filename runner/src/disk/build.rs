//! The one place the disk pipeline meets the build pipeline: a partition
//! whose content is `{"build": …}` (or the `btrfs` shorthand) is a whole
//! rootbox build — btrfs, ext4, erofs or squashfs (a vfat `build` is the
//! `fat` content, made in `contents`), with rootfs, closure,
//! owners … — made into scratch space beside the disk and verified by the
//! build itself before the disk takes it.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use rootbox_images::spec::Spec;
use rootbox_sandbox::MapMode;

use crate::pipeline::request::{Options, Reproducible, StoreStaging};
use crate::pipeline::{build, BuildRequest, Report};

/// A filesystem built for a partition: a file in the disk's scratch
/// directory (removed with it, swept by the next disk if rootbox is
/// killed) and the build's report.
pub struct Built {
    /// The image.
    pub file: File,
    /// Its name in the scratch directory: the disk may take the file
    /// itself as the disk (`assemble`).
    pub path: std::path::PathBuf,
    /// Its bytes.
    pub size: u64,
    /// What the disk reads of the build's report ([`identity`]).
    pub identity: Identity,
    /// The build's own report, as the disk's report carries it.
    pub report: Report,
}

/// What the disk needs of a build's report.
pub struct Identity {
    /// The filesystem UUID ("" where the filesystem has none).
    pub uuid: String,
    /// The label ("" for none).
    pub label: String,
    /// Bytes of the files put in.
    pub content_bytes: u64,
}

/// The only place the disk reads fields of the build's report.
fn identity(r: &Report) -> Identity {
    Identity {
        uuid: r.uuid.clone(),
        label: r.label.clone(),
        content_bytes: r.content_bytes,
    }
}

/// Builds `spec` into `scratch/name`, keeping it open. `reproducible`: the epoch (None: the sources' newest mtime) and
/// seed of a reproducible build.
pub fn build_partition(
    spec: &Spec,
    scratch: &Path,
    name: &str,
    map: MapMode,
    reproducible: Option<Reproducible>,
) -> Result<Built> {
    let path = scratch.join(name);
    let opts = Options {
        map,
        staging: StoreStaging::Auto,
        scratch: None,
        force: false,
        verify: true,
        no_userns: false,
        reproducible,
    };
    let request = BuildRequest {
        spec: spec.clone(),
        output: path.clone(),
        options: opts,
    };
    let report = build(&request)?;
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    Ok(Built {
        file,
        path,
        size,
        identity: identity(&report),
        report,
    })
}
