//! The build pipeline: an image of one filesystem (btrfs, ext4, erofs,
//! squashfs, vfat) from a rootfs and a Nix closure, owned by root, verified.
//! [`build`] runs it for a [`BuildRequest`] ([`request`]: spec, output,
//! options), which other code can make without a command line; `rootbox
//! build` ([`main`]) makes one from its flags and spec ([`args`]).
//!
//! Every filesystem takes the same path. What differs is behind one
//! [`backend::Backend`] per filesystem, picked once ([`for_spec`]):
//! btrfs ([`btrfs`]: mkfs.btrfs with subvolumes, the in-place rewrite,
//! the reproducible pass), ext4, erofs and squashfs ([`tree`]: the
//! tools of `crate::fs`, the layout's one root) or vfat ([`vfat`]: a
//! directory, no owners, so no user namespace). The phases, in the order
//! [`build`] runs them, each timed in the report:
//!
//! 1. *resolve the inputs* (parent, no namespace; [`inputs`]): the
//!    backend's tool found and the spec checked against what it can hold;
//!    spec → layout, ownership manifest, rootfs, closure; the output
//!    checked and opened (`crate::output`); scratch space, a tar rootfs
//!    unpacked there ([`tarball`]), the registration rewritten for the
//!    image; the backend's job for the staging step ([`job::MakeJob`]);
//! 2. *in the sandbox* (`rootbox __stage`, started by [`launch`]; the
//!    protocol is [`job`]; the step is [`stage`]):
//!    *plan* — a walk of the sources, as the namespace sees them,
//!    deciding entry by entry bind or copy ([`plan`]) — → *stage* (tmpfs,
//!    bind mounts, copies) → *seal* (read-only) → *make* the image in a
//!    nested sandbox (mkfs.btrfs, [`mkfs::run`]; or `rootbox __fs-stage`,
//!    which for ext4, erofs and squashfs also fixes the owners and
//!    compares the image with the staged tree; vfat: mkfs.vfat and
//!    mtools). Without a user namespace the same step runs in this
//!    process, copying (every filesystem when no namespace can be had or
//!    `--no-userns` asks; vfat always, having no owners to map);
//! 3. *fix-ups in the image* (parent): what the namespace could not
//!    express (btrfs: unmapped owners, device numbers, the ownership
//!    manifest, tarball owners, the reproducible pass, [`fixup`]);
//! 4. *verify*: the image read back with rootbox's reader for its
//!    filesystem ([`verify`]);
//! 5. *publish*: the image, written to an unnamed temporary file beside
//!    the output, is linked into place only now (`crate::output`). A
//!    failed or killed build leaves nothing at the output path.

mod args;
mod backend;
mod btrfs;
mod example;
mod fixup;
mod ids;
mod inputs;
mod job;
mod launch;
mod mkfs;
mod ops;
mod plan;
mod progress;
mod report;
pub mod request;
pub mod stage;
mod tarball;
mod tree;
mod verify;
mod vfat;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use rootbox_images::spec::{Filesystem, Spec};

pub use crate::interrupted::Interrupted;
pub use args::BuildArgs;
pub use report::Report;
pub use request::BuildRequest;

use backend::{Backend, Planned};

/// Builds one image. Nothing is left at the request's output unless it
/// succeeds.
pub fn build(request: &BuildRequest) -> Result<Report> {
    let t0 = Instant::now();
    let (spec, opts) = (&request.spec, &request.options);

    // 1. In the parent, before any namespace: every input read and checked.
    let mut backend = for_spec(spec)?;
    backend.check(spec, opts)?;
    let inputs = inputs::resolve(spec, opts)?;
    let out = crate::output::Target::check(&request.output, opts.force, &inputs.sources())?;
    let staging = inputs::prepare(spec, &inputs, opts, &out)?;
    let seed = inputs::seed(spec, &inputs.layout, opts);
    let p = Planned {
        spec,
        opts,
        inputs: &inputs,
        staging: &staging,
        seed: seed.as_deref(),
        out: &out,
    };
    let job = backend.job(&p)?;
    let resolve_secs = t0.elapsed().as_secs_f64();

    // 2. In the sandbox: plan → stage → seal → make (in a nested sandbox).
    let staged = launch::run(&staging, job, backend.keeps_owners(), opts, &out)?;
    backend.made(&p, &staged)?;

    // 3. Fix-ups in the image: what the namespace and mkfs could not express.
    let fixups = backend.fix(&p, &staged)?;

    // 4. Verify: the image read back, checked against the plan.
    let verified = backend.verify(&p, &staged)?;
    let (identity, details) = backend.report(&p, &staged, &fixups)?;

    // 5. Publish: linked into place.
    let size_bytes = out.publish()?;
    let warnings = log_warnings(&inputs, &staging, &staged);
    Ok(Report::new(report::Built {
        request,
        identity,
        details,
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

/// The backend for the spec's filesystem, its tool found and checked: the
/// one place the pipeline looks at which filesystem it makes.
fn for_spec(spec: &Spec) -> Result<Box<dyn Backend>> {
    Ok(match spec.filesystem {
        Filesystem::Btrfs => Box::new(btrfs::Btrfs::find()?),
        Filesystem::Ext4 | Filesystem::Erofs | Filesystem::Squashfs => {
            Box::new(tree::Tree::find(spec.filesystem)?)
        }
        Filesystem::Vfat => Box::new(vfat::Vfat::find()?),
    })
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
