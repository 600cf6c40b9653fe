//! The one place the disk pipeline meets the build pipeline: a btrfs
//! partition's content is a whole rootbox btrfs build (rootfs, closure,
//! subvolumes, owners …), built into scratch space beside the disk and
//! verified by the build itself before the disk takes it. The output
//! handling (an unnamed file linked into place only after verification)
//! is the build's too, re-exported from here.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use rootbox_images::spec::Spec;
use rootbox_sandbox::MapMode;

pub use crate::interrupted::Interrupted;
pub use crate::output::Target;
use crate::pipeline::request::{Options, Reproducible, StoreStaging};
use crate::pipeline::{build, BuildRequest, Report};

/// A btrfs filesystem built for a partition: an unlinked file (nothing of
/// it stays behind if rootbox is killed from here on) and the build's
/// report.
pub struct Built {
    pub file: File,
    pub size: u64,
    pub report: Report,
}

/// Builds `spec` into `scratch/name` and unlinks it at once, keeping it
/// open. `reproducible`: the epoch (None: the sources' newest mtime) and
/// seed of a reproducible build.
pub fn build_partition(
    spec: &Spec,
    scratch: &Path,
    name: &str,
    map: MapMode,
    reproducible: Option<Reproducible>,
) -> Result<Built> {
    let path = scratch.join(format!("{name}.btrfs"));
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
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    let size = file.metadata()?.len();
    Ok(Built { file, size, report })
}
