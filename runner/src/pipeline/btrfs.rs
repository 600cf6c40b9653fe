//! The btrfs backend: `mkfs.btrfs --rootdir` on the whole staging tree,
//! one directory per subvolume ([`super::mkfs`]); then, in the parent,
//! the in-place rewrite of what the namespace could not express and the
//! reproducible pass ([`super::fixup`]), and the image read back with
//! rootbox's btrfs reader ([`super::verify`]). Subvolumes, `--reflink` and
//! mkfs.btrfs's versions are this backend's business only.

use anyhow::{Context, Result};
use rootbox_images::fs::btrfs::ReflinkDecision;
use rootbox_images::spec::Spec;

use super::backend::{Backend, Planned};
use super::fixup::FixUps;
use super::job::MakeJob;
use super::launch::Staged;
use super::mkfs::{self, MkfsBtrfs};
use super::report::{BtrfsReport, Details, Identity};
use super::request::Options;
use super::verify::Verified;

/// mkfs.btrfs, found and its version read; what [`Backend::job`] decided
/// about `--reflink`.
pub struct Btrfs {
    mkfs: MkfsBtrfs,
    reflink: Option<ReflinkDecision>,
}

impl Btrfs {
    /// The backend, with mkfs.btrfs found on PATH.
    pub fn find() -> Result<Btrfs> {
        Ok(Btrfs {
            mkfs: mkfs::find_mkfs_btrfs()?,
            reflink: None,
        })
    }
}

impl Backend for Btrfs {
    fn check(&self, _spec: &Spec, _opts: &Options) -> Result<()> {
        // What mkfs.btrfs can do depends on the content and the sources'
        // filesystems: checked when the job is made.
        Ok(())
    }

    fn job(&mut self, p: &Planned) -> Result<MakeJob> {
        let (job, reflink) = mkfs::job(
            &self.mkfs, p.spec, p.inputs, p.staging, p.seed, p.out, p.opts,
        )?;
        self.reflink = Some(reflink);
        Ok(MakeJob::Btrfs(job))
    }

    fn made(&self, p: &Planned, staged: &Staged) -> Result<()> {
        mkfs::check_made(&staged.result, &staged.status, &p.spec.size, p.out)
    }

    fn fix(&self, p: &Planned, staged: &Staged) -> Result<FixUps> {
        let tar = p.staging.tar_owners.as_ref();
        let reproducible = p.opts.reproducible.as_ref().zip(p.seed);
        super::fixup::run(&p.image(), p.inputs, tar, staged, reproducible)
    }

    fn verify(&self, p: &Planned, staged: &Staged) -> Result<Option<Verified>> {
        let tar = p.staging.tar_owners.as_ref();
        super::verify::run(p.opts.verify, &p.image(), p.inputs, tar, staged)
    }

    fn report(&self, p: &Planned, _: &Staged, fixups: &FixUps) -> Result<(Identity, Details)> {
        let image = p.image();
        let (uuid, label) = mkfs::identity(&image);
        let reflink = self.reflink.clone().context("the btrfs job was not made")?;
        let r = BtrfsReport {
            mkfs_version: self.mkfs.version.to_string(),
            mkfs_features: mkfs::features(&image),
            reflink,
            reproducible: fixups.reproducible.clone(),
        };
        let identity = Identity {
            uuid: Some(uuid),
            label,
        };
        Ok((identity, Details::Btrfs(r)))
    }
}
