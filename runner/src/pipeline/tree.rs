//! The backend for ext4, erofs and squashfs: the layout's one root made
//! into the image by the filesystem's tools (`crate::fs`). Unlike btrfs,
//! the owner fixes and the inode-by-inode comparison with the staged tree
//! happen in the staging step, where the tree shows the owners the
//! namespace gives it; the parent reads the image back once more for the
//! paths sshd and systemd-tmpfiles check ([`super::verify::run_other`]).

use anyhow::{bail, Context, Result};
use rootbox_images::fs::Filesystem;
use rootbox_images::spec::{self, Spec, Uuid};

use super::backend::{Backend, Planned};
use super::fixup::FixUps;
use super::job::{MakeJob, StageResult};
use super::launch::Staged;
use super::report::{Details, Identity, TreeReport};
use super::request::Options;
use super::verify::Verified;
use crate::fs::StagedJob;

/// ext4, erofs or squashfs, its tool's version checked.
pub struct Tree {
    filesystem: Filesystem,
    /// The version of [`Filesystem::tool`] found.
    version: String,
    /// The UUID the image is given (the spec's, or a reproducible build's
    /// derived one), once the job is made.
    uuid: Option<String>,
}

impl Tree {
    /// The backend for `fs`, its tool found and new enough.
    pub fn find(fs: spec::Filesystem) -> Result<Tree> {
        let filesystem = fs
            .other()
            .context("the tree backend makes ext4, erofs and squashfs")?;
        let (a, b, c) = crate::fs::check_tool(filesystem)?;
        Ok(Tree {
            filesystem,
            version: format!("{a}.{b}.{c}"),
            uuid: None,
        })
    }

    fn options(&self, spec: &Spec) -> rootbox_images::fs::Options {
        rootbox_images::fs::Options {
            label: spec.label.clone(),
            uuid: spec.uuid.as_ref().map(|u| u.to_string()),
            compress: spec.compress.map(|c| c.mkfs_arg()),
            size: spec.size,
            headroom: spec.headroom,
            subvolumes: !spec.subvolumes.is_empty() || spec.file_systems.is_some(),
            reproducible: None,
        }
    }
}

impl Backend for Tree {
    fn check(&self, spec: &Spec, _opts: &Options) -> Result<()> {
        rootbox_images::fs::check(self.filesystem, &self.options(spec))?;
        Ok(())
    }

    fn job(&mut self, p: &Planned) -> Result<MakeJob> {
        let fs = self.filesystem;
        if let Some(t) = &p.staging.tar_owners {
            if let Some(d) = t.devices.first() {
                bail!(
                    "the tar rootfs holds device nodes ({} and {} more) that a {fs} image cannot \
                     get without root; remove them from the archive or build btrfs",
                    d.path,
                    t.devices.len() - 1
                );
            }
        }
        let manifest = match &p.spec.owners {
            Some(m) => Some((
                std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?,
                m.display().to_string(),
            )),
            None => None,
        };
        let archive = p.staging.tar_owners.as_ref().map(|t| {
            t.entries
                .iter()
                .map(|(p, e)| (p.clone(), (e.uid, e.gid, e.mode)))
                .collect()
        });
        let reproducible = p.opts.reproducible.as_ref().zip(p.seed).map(|(r, seed)| {
            let purpose = format!("{fs} uuid");
            let uuid = rootbox_btrfs::derived_uuid(seed.as_bytes(), &purpose, &[]);
            (
                r.epoch.map(|e| e.max(0) as u64),
                Uuid::from_bytes(uuid).to_string(),
            )
        });
        let uuid = p.inputs.uuid.as_ref().map(|u| u.to_string());
        self.uuid = uuid
            .clone()
            .or_else(|| reproducible.as_ref().map(|(_, u)| u.clone()));
        Ok(MakeJob::Tree(StagedJob {
            filesystem: fs,
            image: p.out.mkfs_path(),
            label: p.inputs.label.clone(),
            uuid,
            compress: p.spec.compress.map(|c| c.mkfs_arg()),
            size: p.spec.size,
            headroom: p.spec.headroom,
            reproducible,
            manifest,
            archive,
            origin: crate::fs::Origin {
                rootfs: p.spec.rootfs.as_ref().map(|r| r.display().to_string()),
                store_dir: Some(super::inputs::IMAGE_STORE.to_string()),
            },
            // Set by the staging step when it runs without a namespace.
            direct: false,
            specials: Default::default(),
        }))
    }

    fn made(&self, _p: &Planned, staged: &Staged) -> Result<()> {
        if staged.result.tool_status != Some(0) {
            bail!("{}", staged.result.tool_output);
        }
        if !staged.status.success() {
            bail!("the staging step ended with {}", staged.status);
        }
        Ok(())
    }

    fn fix(&self, _p: &Planned, staged: &Staged) -> Result<FixUps> {
        // Done in the staging step, where the owners were visible.
        let made = made(&staged.result)?;
        Ok(FixUps {
            rewritten: (made.unmapped_given_to_root + made.manifest_paths) as u64,
            secs: 0.0,
            reproducible: None,
        })
    }

    fn verify(&self, p: &Planned, _staged: &Staged) -> Result<Option<Verified>> {
        super::verify::run_other(p.opts.verify, self.filesystem, &p.image())
    }

    fn report(&self, p: &Planned, staged: &Staged, _: &FixUps) -> Result<(Identity, Details)> {
        let made = made(&staged.result)?;
        let uuid = crate::fs::uuid(self.filesystem, &p.image())?;
        if let (Some(want), Some(got)) = (&self.uuid, &uuid) {
            if want != got {
                bail!(
                    "the {} image carries UUID {got}, not {want}",
                    self.filesystem
                );
            }
        }
        let identity = Identity {
            uuid,
            label: p.inputs.label.clone().unwrap_or_default(),
        };
        let r = TreeReport {
            tool: self.filesystem.tool().package,
            tool_version: self.version.clone(),
            unmapped_given_to_root: made.unmapped_given_to_root,
            manifest_paths: made.manifest_paths,
            verified_paths: made.verified_paths,
            reproducible_epoch: made.reproducible_epoch,
        };
        Ok((identity, Details::tree(self.filesystem, r)))
    }
}

fn made(r: &StageResult) -> Result<&crate::fs::Made> {
    r.made
        .as_ref()
        .context("the staging step made the image but did not say how")
}
