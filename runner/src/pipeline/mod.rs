//! The build pipeline: a btrfs image with subvolumes from a rootfs and a
//! Nix closure, owned by root, verified. [`build`] runs it for a
//! [`BuildRequest`] ([`request`]: spec, output, options), which other code
//! can make without a command line; `rootbox build` ([`main`]) makes one
//! from its flags and spec ([`args`]).
//!
//! The phases, in the order [`build`] runs them, each timed in the report:
//!
//! 1. *resolve the inputs* (parent, no namespace; [`inputs`]): spec →
//!    layout, ownership manifest, rootfs, closure; the output checked and
//!    opened ([`output`]); mkfs.btrfs found and its version checked
//!    ([`mkfs`]); scratch space, a tar rootfs unpacked there
//!    ([`tarball`]), the registration rewritten for the image;
//! 2. *in the sandbox* (`rootbox __stage`, started by [`launch`]; the
//!    protocol is [`job`]; the step is [`stage`]):
//!    *plan* — a walk of the sources, as the namespace sees them,
//!    deciding entry by entry bind or copy ([`plan`]) — → *stage* (tmpfs,
//!    bind mounts, copies) → *seal* (read-only) → *mkfs* in a nested
//!    sandbox ([`mkfs::run`]). Without a user namespace the same step runs
//!    in this process, copying;
//! 3. *fix-ups in the image* (parent; [`fixup`]): unmapped owners, device
//!    numbers, the ownership manifest, tarball owners, the reproducible
//!    pass;
//! 4. *verify*: the image read back with rootbox's btrfs reader
//!    ([`verify`]);
//! 5. *publish*: the image, written to an unnamed temporary file beside
//!    the output, is linked into place only now ([`output`]). A failed or
//!    killed build leaves nothing at the output path.
//!
//! ext4, erofs and squashfs ([`build_other`]) take the same steps with
//! the tree as one root: in the sandbox the filesystem step of
//! `crate::fs` replaces mkfs.btrfs and does its own fix-ups and
//! comparison with the staged tree; the parent then checks the paths sshd
//! and systemd-tmpfiles care about ([`verify::run_other`]) and publishes.

mod args;
mod example;
mod fixup;
mod ids;
mod inputs;
mod job;
mod launch;
mod mkfs;
mod ops;
pub(crate) mod output;
mod plan;
mod progress;
mod report;
pub mod request;
pub mod stage;
mod tarball;
mod verify;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use rootbox_images::spec::Uuid;

pub use args::{source_date_epoch, BuildArgs};
pub use launch::Interrupted;
pub use report::Report;
pub use request::BuildRequest;

/// Builds one image. Nothing is left at the request's output unless it
/// succeeds.
pub fn build(request: &BuildRequest) -> Result<Report> {
    if let Some(fs) = request.spec.filesystem.other() {
        return build_other(request, fs);
    }
    let t0 = Instant::now();
    let (spec, opts) = (&request.spec, &request.options);

    // 1. In the parent, before any namespace: every input read and checked.
    let inputs = inputs::resolve(spec, opts)?;
    let out = output::Target::check(&request.output, opts.force, &inputs.sources())?;
    let mkfs = mkfs::find_mkfs_btrfs()?;
    let staging = inputs::prepare(spec, &inputs, opts, &out)?;
    let seed = inputs::seed(spec, &inputs.layout, opts);
    let (mkfs_job, reflink) =
        mkfs::job(&mkfs, spec, &inputs, &staging, seed.as_deref(), &out, opts)?;
    let resolve_secs = t0.elapsed().as_secs_f64();

    // 2. In the sandbox: plan → stage → seal → mkfs (in a nested sandbox).
    let staged = launch::run(&staging, mkfs_job, None, opts, &out)?;
    mkfs::check_made(&staged.result, &staged.status, &spec.size, &out)?;

    // 3. Fix-ups in the image: what the namespace and mkfs could not express.
    let image = out.read_path();
    let tar = staging.tar_owners.as_ref();
    let reproducible = opts.reproducible.as_ref().zip(seed.as_deref());
    let fixups = fixup::run(&image, &inputs, tar, &staged, reproducible)?;

    // 4. Verify: the image read back, checked against the plan.
    let verified = verify::run(opts.verify, &image, &inputs, tar, &staged)?;
    let identity = mkfs::identity(&image);
    let mkfs_features = mkfs::features(&image);

    // 5. Publish: linked into place.
    let size_bytes = out.publish()?;
    let warnings = log_warnings(&inputs, &staging, &staged);
    Ok(Report::new(report::Built {
        request,
        identity,
        mkfs_version: mkfs.version.to_string(),
        mkfs_features,
        reflink,
        staging: &staging,
        staged: &staged,
        fixups,
        verified,
        size_bytes,
        warnings,
        resolve_secs,
        total_secs: t0.elapsed().as_secs_f64(),
    }))
}

/// [`build`] for ext4, erofs and squashfs (`crate::fs`): the same inputs
/// and staging, with the tree as one root; the staging step makes the
/// image, fixes its owners (unmapped ones, the manifest, a tar rootfs's)
/// and compares it with the staged tree, where the owners are what the
/// namespace sees; then it is published.
fn build_other(request: &BuildRequest, fs: rootbox_images::fs::Filesystem) -> Result<Report> {
    let t0 = Instant::now();
    let (spec, opts) = (&request.spec, &request.options);
    let check = rootbox_images::fs::Options {
        label: spec.label.clone(),
        uuid: spec.uuid.as_ref().map(|u| u.to_string()),
        compress: spec.compress.map(|c| c.mkfs_arg()),
        size: spec.size,
        headroom: spec.headroom,
        subvolumes: !spec.subvolumes.is_empty() || spec.file_systems.is_some(),
        reproducible: None,
    };
    rootbox_images::fs::check(fs, &check)?;
    crate::fs::check_tool(fs)?;
    if opts.no_userns {
        anyhow::bail!("--no-userns builds only btrfs images: a {fs} image needs a user namespace");
    }
    let inputs = inputs::resolve(spec, opts)?;
    let out = output::Target::check(&request.output, opts.force, &inputs.sources())?;
    let staging = inputs::prepare(spec, &inputs, opts, &out)?;
    let seed = inputs::seed(spec, &inputs.layout, opts);
    let manifest = match &spec.owners {
        Some(p) => Some((
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        )),
        None => None,
    };
    let archive = staging.tar_owners.as_ref().map(|t| {
        t.entries
            .iter()
            .map(|(p, e)| (p.clone(), (e.uid, e.gid, e.mode)))
            .collect()
    });
    if let Some(t) = &staging.tar_owners {
        if let Some(d) = t.devices.first() {
            anyhow::bail!(
                "the tar rootfs holds device nodes ({} and {} more) that a {fs} image cannot \
                 get without root; remove them from the archive or build btrfs",
                d.path,
                t.devices.len() - 1
            );
        }
    }
    let fs_job = crate::fs::StagedJob {
        filesystem: fs,
        label: inputs.label.clone(),
        uuid: inputs.uuid.as_ref().map(|u| u.to_string()),
        compress: check.compress.clone(),
        size: spec.size,
        headroom: spec.headroom,
        reproducible: opts
            .reproducible
            .as_ref()
            .zip(seed.as_deref())
            .map(|(r, seed)| {
                let purpose = format!("{fs} uuid");
                let uuid = rootbox_btrfs::derived_uuid(seed.as_bytes(), &purpose, &[]);
                (
                    r.epoch.map(|e| e.max(0) as u64),
                    Uuid::from_bytes(uuid).to_string(),
                )
            }),
        manifest,
        archive,
    };
    // The btrfs job carries what the staging step shares: the output path.
    let mkfs_job = mkfs::job_for_other(spec, &inputs, &out);
    let resolve_secs = t0.elapsed().as_secs_f64();
    let staged = launch::run(&staging, mkfs_job, Some(fs_job), opts, &out)?;
    if staged.result.mkfs_status != Some(0) {
        anyhow::bail!("{}", staged.result.mkfs_output);
    }
    if !staged.status.success() {
        anyhow::bail!("the staging step ended with {}", staged.status);
    }
    let made = staged.result.fs_made.clone().unwrap_or_default();
    let verified = verify::run_other(opts.verify, fs, &out.read_path())?;
    let identity = (
        inputs
            .uuid
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default(),
        inputs.label.clone().unwrap_or_default(),
    );
    let size_bytes = out.publish()?;
    let warnings = log_warnings(&inputs, &staging, &staged);
    let fixups = fixup::FixUps {
        rewritten: (made.unmapped_given_to_root + made.manifest_paths) as u64,
        secs: 0.0,
        reproducible: None,
    };
    Ok(Report::new(report::Built {
        request,
        identity,
        mkfs_version: fs.tool().package.to_string(),
        mkfs_features: Vec::new(),
        reflink: rootbox_images::mkfs::ReflinkDecision {
            mode: spec.reflink,
            used: false,
            reason: Some(format!("{fs} images are made without mkfs.btrfs --reflink")),
        },
        staging: &staging,
        staged: &staged,
        fixups,
        verified,
        size_bytes,
        warnings,
        resolve_secs,
        total_secs: t0.elapsed().as_secs_f64(),
    }))
}

/// Every warning of the phases, in their order, each logged once; the
/// report lists them too.
fn log_warnings(
    inputs: &inputs::Inputs,
    staging: &inputs::Staging,
    staged: &launch::Staged,
) -> Vec<String> {
    let warnings: Vec<String> = [
        &inputs.warnings,
        &staging.warnings,
        &staged.warnings,
        &staged.result.warnings,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    warnings
}

/// `rootbox build`: the flags and spec made into a request, built, and
/// the report printed.
pub fn main(a: &BuildArgs) -> Result<ExitCode> {
    let (spec, _example) = a.spec()?;
    if a.print_spec {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    let request = a.request(spec)?;
    progress::allow(a.json);
    let report = match build(&request) {
        Ok(r) => r,
        // Reported as a shell would (130 for SIGINT, 143 for SIGTERM).
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(&Interrupted(sig)) => {
                eprintln!(
                    "rootbox: {e}; nothing was written to {}",
                    request.output.display()
                );
                return Ok(ExitCode::from((128 + sig) as u8));
            }
            None => return Err(e),
        },
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}
