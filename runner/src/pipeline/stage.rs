//! The staging step, run inside the sandbox as `rootbox __stage JOB` (or,
//! without a user namespace, in a process group of its own), in this
//! order:
//!
//! 1. *plan*: the planner ([`super::plan`]) walks the sources as the
//!    namespace sees them and decides, entry by entry, bind or copy;
//! 2. *stage* ([`apply`]): a tmpfs on the staging directory, and each
//!    planned op made on it (directories, bind mounts, copies into scratch
//!    space);
//! 3. *seal*: the staging tree made read-only;
//! 4. *make* the image from it, in a nested sandbox: the backend's
//!    [`MakeJob`] ([`make`]: mkfs.btrfs, [`super::mkfs::run`]; ext4, erofs,
//!    squashfs, `crate::fs::cli::run_nested`; vfat, without a namespace,
//!    [`super::vfat::make_staged`]).
//!
//! It then writes a [`StageResult`] for the parent ([`super::job`]).

mod apply;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM};

use super::job::{MakeJob, StageJob, StageResult};
use super::mkfs;
use super::plan::Planner;
use apply::stage;

/// `rootbox __stage JOB`: reads the job the parent wrote and runs it.
pub fn main(job_path: &Path) -> Result<std::process::ExitCode> {
    // Without a namespace the parent blocks the signals it forwards here
    // (`launch::run_direct`), and the mask is inherited: take them again,
    // and leave them to the tools.
    let mut stops = nix::sys::signal::SigSet::empty();
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        stops.add(sig);
    }
    stops
        .thread_unblock()
        .context("unblocking SIGINT, SIGTERM and SIGHUP")?;
    let text =
        fs::read_to_string(job_path).with_context(|| format!("reading {}", job_path.display()))?;
    let job: StageJob = serde_json::from_str(&text).context("parsing the staging job")?;
    execute(&job)
}

/// Runs a job and writes its result; the exit code says whether the tool made
/// an image.
fn execute(job: &StageJob) -> Result<std::process::ExitCode> {
    let mut result = StageResult::default();
    let outcome = run(job, &mut result);
    let start = Instant::now();
    empty_dir(&job.scratch);
    result.cleanup_secs = start.elapsed().as_secs_f64();
    if let Err(e) = &outcome {
        result.error = Some(crate::error_text::error_text(e));
    }
    fs::write(&job.result, serde_json::to_vec(&result)?)
        .with_context(|| format!("writing {}", job.result.display()))?;
    Ok(match (outcome, result.tool_status) {
        (Ok(()), Some(0)) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::from(1),
    })
}

/// The staging step: plan → stage → seal → make.
fn run(job: &StageJob, result: &mut StageResult) -> Result<()> {
    let start = Instant::now();
    let planner = plan(job, result)?;
    result.plan_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let stager = stage(job, &planner)?;
    seal(job)?;
    result.copy_secs = stager.copy_secs;
    result.copied_bytes = stager.copied;
    result.mkfs_orders = job.make.orders_itself();
    result.sorted_copy = job.sorted_copy;
    result.warnings.extend(stager.warnings);
    result.specials = stager.specials;
    result.stage_secs = start.elapsed().as_secs_f64() - result.copy_secs;

    let start = Instant::now();
    make(job, result)?;
    result.mkfs_secs = start.elapsed().as_secs_f64();
    Ok(())
}

/// Makes the image from the sealed tree with the filesystem's tool: the
/// staging step's one look at which filesystem it makes. The tool's
/// status and output go into `result`.
fn make(job: &StageJob, result: &mut StageResult) -> Result<()> {
    match &job.make {
        MakeJob::Btrfs(m) => mkfs::run_staged(m, job, result),
        MakeJob::Tree(t) => {
            use crate::fs::cli::{run_nested, StageOutcome, StageStep};
            let step = StageStep {
                job: crate::fs::StagedJob {
                    direct: job.direct,
                    specials: result.specials.in_image(crate::fs::STAGED_ROOT.as_bytes()),
                    ..t.clone()
                },
                source: job.stage_dir.join(crate::fs::STAGED_ROOT),
                scratch: job.scratch.clone(),
                max_mtime: result.max_mtime,
            };
            let o = if job.direct {
                // No namespace to nest in: made here.
                let (j, max_mtime) = (&step.job, step.max_mtime);
                let made = crate::fs::run_staged(j, &step.source, &step.scratch, max_mtime);
                StageOutcome {
                    error: made.as_ref().err().map(|e| format!("{e:#}")),
                    made: made.ok(),
                }
            } else {
                run_nested(&step)?
            };
            result.tool_status = Some(if o.made.is_some() { 0 } else { 1 });
            result.made = o.made;
            result.tool_output = o.error.unwrap_or_default();
            Ok(())
        }
        MakeJob::Vfat(v) => {
            super::vfat::make_staged(v, &job.stage_dir.join(crate::fs::STAGED_ROOT), result)
        }
    }
}

/// Walks the sources and decides how each reaches the staging tree; what
/// the walk found goes into `result`.
fn plan(job: &StageJob, result: &mut StageResult) -> Result<Planner> {
    let mut planner = Planner::new(job.scratch.clone(), job.staging, job.direct);
    planner.copy_all |= job.sorted_copy;
    for root in &job.roots {
        planner.stage_root(root, &job.store_paths)?;
    }
    if let Some((file, dst)) = &job.registration {
        planner.add_file(file, dst.clone());
    }
    planner.finish_counts();
    result.counts = planner.counts.clone();
    result.warnings = std::mem::take(&mut planner.warnings);
    result.uids = planner.uids.iter().copied().collect();
    result.gids = planner.gids.iter().copied().collect();
    result.uids.sort();
    result.gids.sort();
    result.unmapped = planner.unmapped.clone();
    result.max_mtime = planner.max_mtime;
    result.devices = planner.devices.clone();
    tracing::debug!(
        "plan: {} entries, {} bytes; {} bind mounts, {} bytes to copy",
        result.counts.entries,
        result.counts.bytes,
        result.counts.binds,
        result.counts.copied_bytes
    );
    Ok(planner)
}

/// Sources are read-only to everything after this point, mkfs included.
fn seal(job: &StageJob) -> Result<()> {
    if !job.direct {
        rootbox_sandbox::seal_readonly(&job.stage_dir)
            .context("making the staging tree read-only")?;
    }
    Ok(())
}

/// Removes everything below `dir`, keeping `dir`. Best effort: what
/// remains is reported by the parent when it removes `dir` itself.
fn empty_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => {
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                    empty_dir(&p);
                    fs::remove_dir(&p)
                }
                _ => fs::remove_file(&p),
            };
        }
    }
}
