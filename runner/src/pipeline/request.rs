//! What to build: a [`BuildRequest`] is everything [`super::build`] needs,
//! with no command line in sight (`rootbox build` makes one from its flags
//! and spec in [`super::args`]).

use std::path::PathBuf;

use rootbox_images::spec::Spec;

/// Where `runner/src/disk/` finds it while it moves to the shared module.
pub use crate::reproducible::Reproducible;
use rootbox_sandbox::MapMode;
use serde::{Deserialize, Serialize};

/// One image to build.
pub struct BuildRequest {
    /// What the image holds, validated ([`Spec::validate`]).
    pub spec: Spec,
    /// The image file to write; nothing appears there unless the build
    /// succeeds.
    pub output: PathBuf,
    /// How to build it.
    pub options: Options,
}

/// How to build, beyond the spec.
pub struct Options {
    /// How ids are mapped into the sandbox (`--map`).
    pub map: MapMode,
    /// How content whose owner does not map is staged (`--store-staging`).
    pub staging: StoreStaging,
    /// Where copies go; None: beside the output (`--scratch`).
    pub scratch: Option<PathBuf>,
    /// Replace an existing output (`--force`).
    pub force: bool,
    /// Read the image back and check it (false: `--no-verify`).
    pub verify: bool,
    /// Build without a user namespace (`--no-userns`).
    pub no_userns: bool,
    /// Make a reproducible image (`--reproducible`, `SOURCE_DATE_EPOCH`).
    pub reproducible: Option<Reproducible>,
}

/// How staged content with owners that do not map is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreStaging {
    /// Bind everything, also what shows up with the overflow id, and give
    /// that to root in the image after mkfs (an in-place rewrite of the
    /// inodes): zero copy. Copy only what carries ACLs naming unmapped ids.
    Auto,
    /// Bind everything; fail if anything would reach the image unmapped.
    Bind,
    /// Copy what does not map, and every store path, into scratch space,
    /// where the copies become root's (no rewrite of the image).
    Copy,
}
