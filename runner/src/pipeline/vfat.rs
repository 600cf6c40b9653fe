//! The backend for vfat (FAT12/16/32, for EFI system and firmware
//! partitions): the rootfs directory made into a FAT filesystem with
//! dosfstools and mtools (`crate::fs::vfat`). FAT records no owners, modes
//! or links, so the backend keeps none ([`Backend::keeps_owners`]): the
//! staging step runs without a user namespace, copying the tree as the
//! caller, and there is nothing to fix afterwards. The rootfs is walked
//! and refused where FAT cannot hold it ([`Backend::check`]: names, files
//! of 4 GiB, path lengths, a fixed size too small) before anything is
//! staged; the image is read back with mtools and compared with the
//! rootfs, byte for byte ([`Backend::verify`]).

use std::cell::OnceCell;
use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rootbox_images::fs::vfat::{BootSector, Mkfs, FAT_EPOCH};
use rootbox_images::size::Size;
use rootbox_images::spec::Spec;

use super::backend::{Backend, Planned};
use super::fixup::FixUps;
use super::job::{MakeJob, StageResult, VfatJob};
use super::launch::Staged;
use super::report::{Details, Identity, VfatReport};
use super::request::Options;
use super::verify::Verified;
use crate::fs::vfat;

/// The vfat backend, mkfs.vfat's version found.
pub struct Vfat {
    version: String,
    /// The rootfs, walked and checked by [`Backend::check`].
    source: OnceCell<vfat::Source>,
    volume_id: u32,
}

impl Vfat {
    /// The backend, mkfs.vfat found (dosfstools prints its version on
    /// `--help`).
    pub fn find() -> Result<Vfat> {
        let out = std::process::Command::new("mkfs.vfat")
            .arg("--help")
            .output()
            .context("running mkfs.vfat (install dosfstools and mtools)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("mkfs.fat "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("unknown")
            .to_string();
        Ok(Vfat {
            version,
            source: OnceCell::new(),
            volume_id: 0,
        })
    }

    fn source(&self) -> Result<&vfat::Source> {
        self.source
            .get()
            .context("the vfat backend was not checked")
    }
}

impl Backend for Vfat {
    fn keeps_owners(&self) -> bool {
        false
    }

    fn check(&self, spec: &Spec, opts: &Options) -> Result<()> {
        spec.check_vfat()?;
        let rootfs = spec.rootfs.as_deref().expect("checked");
        if std::fs::metadata(rootfs).is_ok_and(|m| m.is_file()) {
            bail!(
                "rootfs {}: a vfat filesystem is made from a directory, not an archive: unpack \
                 it first",
                rootfs.display()
            );
        }
        let src = vfat::check(rootfs).context("\"rootfs\"")?;
        if let Size::Fixed(b) = spec.size {
            let sizes: Vec<u64> = src.files.iter().map(|(_, s)| *s).collect();
            rootbox_images::fs::vfat::check_fits(b.bytes(), &sizes, src.dirs.len(), rootfs)?;
        }
        if opts.map == rootbox_sandbox::MapMode::Subid {
            tracing::warn!("--map subid: FAT records no owners; it is made without a namespace");
        }
        if self.source.set(src).is_err() {
            bail!("the vfat backend was checked twice");
        }
        Ok(())
    }

    fn job(&mut self, p: &Planned) -> Result<MakeJob> {
        // The volume id: derived from a reproducible build's seed, else random.
        let bytes = match p.seed {
            Some(seed) => rootbox_btrfs::derived_uuid(seed.as_bytes(), "vfat volume id", &[]),
            None => random()?,
        };
        self.volume_id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok(MakeJob::Vfat(VfatJob {
            image: p.out.mkfs_path(),
            size: match p.spec.size {
                Size::Fixed(b) => Some(b.bytes()),
                Size::Auto => None,
            },
            headroom: p.spec.headroom.bytes(),
            label: p.inputs.label.clone(),
            volume_id: self.volume_id,
            reproducible: p.opts.reproducible.as_ref().map(|r| r.epoch),
        }))
    }

    fn made(&self, _p: &Planned, staged: &Staged) -> Result<()> {
        if staged.result.tool_status != Some(0) {
            bail!("{}", staged.result.tool_output);
        }
        Ok(())
    }

    fn fix(&self, _p: &Planned, _staged: &Staged) -> Result<FixUps> {
        // No owners, modes or devices: nothing the staging could not say.
        Ok(FixUps {
            rewritten: 0,
            secs: 0.0,
            reproducible: None,
        })
    }

    fn verify(&self, p: &Planned, _staged: &Staged) -> Result<Option<Verified>> {
        if !p.opts.verify {
            tracing::warn!("--no-verify: the FAT image was not read back");
            return Ok(None);
        }
        let start = std::time::Instant::now();
        let src = self.source()?;
        let image = File::open(p.image()).context("opening the FAT image to read it back")?;
        vfat::verify(&vfat::for_tools(&image)?, src, p.staging.scratch.path()).with_context(
            || {
                format!(
                    "reading the image back and comparing it with rootfs {}",
                    src.root.display()
                )
            },
        )?;
        Ok(Some(Verified {
            entries: (src.files.len() + src.dirs.len()) as u64,
            secs: start.elapsed().as_secs_f64(),
            ..Verified::default()
        }))
    }

    fn report(&self, p: &Planned, staged: &Staged, _: &FixUps) -> Result<(Identity, Details)> {
        let mut boot = [0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(&File::open(p.image())?, &mut boot, 0)
            .context("reading the FAT boot sector")?;
        let b = BootSector::parse(&boot).context("the image has no FAT boot sector")?;
        if b.volume_id != self.volume_id {
            bail!(
                "the FAT image carries volume id {:08x}, not {:08x}",
                b.volume_id,
                self.volume_id
            );
        }
        let src = self.source()?;
        let id = BootSector::id_text(b.volume_id);
        let identity = Identity {
            uuid: Some(id.clone()),
            label: p.inputs.label.clone().unwrap_or_default(),
        };
        let r = VfatReport {
            tool: "dosfstools",
            tool_version: self.version.clone(),
            volume_id: id,
            fat_size: b.fat_bits,
            verified_files: src.files.len(),
            verified_dirs: src.dirs.len(),
            reproducible_epoch: p
                .opts
                .reproducible
                .as_ref()
                .map(|r| fat_epoch(r.epoch, staged.result.max_mtime)),
        };
        Ok((identity, Details::Vfat(r)))
    }
}

/// The time of every entry of a reproducible FAT: the epoch given, else
/// the newest source mtime; never before 1980.
fn fat_epoch(epoch: Option<i64>, max_mtime: i64) -> i64 {
    epoch.unwrap_or(max_mtime).max(FAT_EPOCH)
}

/// In the staging step: the FAT image made from the staged tree `root`
/// (the rootfs, copied: this backend keeps no owners, so it runs without
/// a namespace). mkfs.vfat and mtools are the tools.
pub fn make_staged(job: &VfatJob, root: &Path, result: &mut StageResult) -> Result<()> {
    let src = vfat::check(root)?;
    let epoch = job.reproducible.map(|e| fat_epoch(e, result.max_mtime));
    let format = vfat::Format {
        size: job.size,
        headroom: job.headroom,
        mkfs: Mkfs {
            fat_size: None,
            label: job.label.clone(),
            volume_id: job.volume_id,
            invariant: epoch.is_some(),
        },
        epoch,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&job.image)
        .context("opening the image file")?;
    match vfat::make_in(&src, &format, &file) {
        Ok(_) => result.tool_status = Some(0),
        Err(e) => {
            result.tool_status = Some(1);
            result.tool_output = crate::error_text::error_text(&e);
        }
    }
    Ok(())
}

/// 16 random bytes.
fn random() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b)
}
