//! One filesystem, one backend: what [`super::build`] asks of every
//! filesystem, and the one place that picks the backend for a spec
//! ([`super::for_spec`]).
//!
//! Every backend takes the same steps, in this order: check the spec
//! against what its tool and format can hold, before anything is staged
//! ([`Backend::check`]) → the job for the staging step ([`Backend::job`],
//! a [`MakeJob`]) → make, in the sandbox ([`MakeJob::run`]) → put in the
//! image what the namespace could not express ([`Backend::fix`]) → read
//! back and verify against the staged tree ([`Backend::verify`]) → its own
//! part of the report ([`Backend::report`], a [`Details`]).
//!
//! | backend | makes | its own business |
//! |---|---|---|
//! | [`super::btrfs`] | `mkfs.btrfs --rootdir` | subvolumes, the in-place rewrite, the reproducible pass, `--reflink` |
//! | [`super::tree`] | ext4, erofs, squashfs (`crate::fs`) | the owner fixes and the comparison, done in the staging step |
//! | [`super::vfat`] | `mkfs.vfat`, mtools (`crate::fs::vfat`) | FAT's limits checked on the rootfs; no owners, no namespace; read back and compared byte for byte |
//!
//! [`super::for_spec`] picks the backend: the one place the parent looks
//! at which filesystem it makes; the staging step's one is where it runs
//! the [`MakeJob`] ([`super::stage`]). A new filesystem is a new backend
//! file, one variant of [`MakeJob`] and of [`Details`], and one line in
//! each of those two places; the phases of [`super::build`] stay as they
//! are. A filesystem without owners (FAT) says so
//! ([`Backend::keeps_owners`]) and is staged without a user namespace.

use anyhow::Result;
use rootbox_images::spec::Spec;

use super::fixup::FixUps;
use super::inputs::{Inputs, Staging};
use super::job::MakeJob;
use super::launch::Staged;
use super::report::{Details, Identity};
use super::request::Options;
use super::verify::Verified;
use crate::output::Target;

/// What the parent knows once the inputs are resolved: what every step
/// of a backend is given.
pub struct Planned<'a> {
    pub spec: &'a Spec,
    pub opts: &'a Options,
    pub inputs: &'a Inputs,
    pub staging: &'a Staging,
    /// The seed of a reproducible build's derived UUIDs.
    pub seed: Option<&'a str>,
    pub out: &'a Target,
}

impl Planned<'_> {
    /// The image as the parent reads it (not yet published).
    pub fn image(&self) -> std::path::PathBuf {
        self.out.read_path()
    }
}

/// One filesystem's steps (see the module doc). The parent calls them in
/// order; the staging step runs the [`MakeJob`] in between.
pub trait Backend {
    /// Whether the filesystem stores owners. One that does not (FAT) needs
    /// no user namespace: the staging step then runs in this process,
    /// copying, as with `--no-userns`.
    fn keeps_owners(&self) -> bool {
        true
    }
    /// Refusals before anything is staged: the spec and the options
    /// against what the tool and the format can hold.
    fn check(&self, spec: &Spec, opts: &Options) -> Result<()>;
    /// The job the staging step runs to make the image.
    fn job(&mut self, p: &Planned) -> Result<MakeJob>;
    /// Back in the parent: whether the image was made as the spec asks.
    fn made(&self, p: &Planned, staged: &Staged) -> Result<()>;
    /// What the namespace could not express, put in the image.
    fn fix(&self, p: &Planned, staged: &Staged) -> Result<FixUps>;
    /// The image read back and checked against the staged tree (`None`:
    /// `--no-verify`).
    fn verify(&self, p: &Planned, staged: &Staged) -> Result<Option<Verified>>;
    /// The image's identity and the backend's own part of the report.
    fn report(&self, p: &Planned, staged: &Staged, fixups: &FixUps) -> Result<(Identity, Details)>;
}
