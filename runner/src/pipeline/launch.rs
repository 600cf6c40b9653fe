//! The parent's side of the staging step: the [`StageJob`] written, then
//! `rootbox __stage JOB` re-executed in the sandbox (a user, mount and pid
//! namespace), or, when there is no user namespace, in a process group of
//! its own with the stopping signals forwarded to it; the [`StageResult`]
//! read back.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rootbox_sandbox::{ExitStatus, MapMode, Sandbox};

use super::inputs::Staging;
use super::job::{MakeJob, StageJob, StageResult};
use super::request::Options;
use crate::interrupted::Interrupted;
use crate::output::Target;

/// What came back from the staging step.
pub struct Staged {
    pub result: StageResult,
    /// How the staging step ended.
    pub status: ExitStatus,
    /// It ran without a user namespace (asked for, or no namespace could
    /// be made): everything was copied as the caller.
    pub direct: bool,
    /// Whether it ran in a user namespace, and why not (the report's
    /// `namespace`).
    pub namespace: Namespace,
    /// Said about how it ran.
    pub warnings: Vec<String>,
}

/// Whether the staging step ran in a user namespace; without one, why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Namespace {
    pub used: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Runs the staging step (plan → stage → seal → mkfs) for `staging`, and
/// returns what it reported. An interrupted step is [`Interrupted`]; one
/// that failed before mkfs is an error carrying its message.
/// `owners`: the filesystem keeps owners; one that does not needs no user
/// namespace, and the step runs in this process (as with `--no-userns`).
pub fn run(
    staging: &Staging,
    make: MakeJob,
    owners: bool,
    opts: &Options,
    out: &Target,
) -> Result<Staged> {
    let plan_dir = staging.plan_dir.path();
    let mut job = StageJob {
        stage_dir: staging.stage_dir.clone(),
        roots: staging.roots.clone(),
        store_paths: staging.store_paths.clone(),
        registration: staging.staged_registration.clone(),
        staging: opts.staging,
        make,
        result: plan_dir.join("result.json"),
        scratch: staging.scratch.path().to_path_buf(),
        direct: false,
        reproducible: opts.reproducible.is_some(),
        sorted_copy: false,
        epoch: opts.reproducible.as_ref().and_then(|r| r.epoch),
    };
    let mut warnings = Vec::new();
    // A reproducible image without copying where mkfs allows it; a set
    // SOURCE_DATE_EPOCH alone never turns bind staging into a copy.
    if let Some(r) = &opts.reproducible {
        if r.explicit {
            job.sorted_copy = !job.make.orders_itself();
        } else if !job.make.orders_itself() {
            warnings.push(format!(
                "SOURCE_DATE_EPOCH is set: times clamped and UUIDs derived, but the sources stay \
                 bound (no copy), so inode numbers follow their listing order and the bytes may \
                 differ between machines; mkfs.btrfs {} or newer orders them itself, or pass \
                 --reproducible (copies the content into memory)",
                super::mkfs::DETERMINISTIC
            ));
        }
    }
    let without = if opts.no_userns {
        Some("--no-userns asks for a build without a user namespace".to_string())
    } else if !owners {
        Some("the filesystem keeps no owners, so none is needed".to_string())
    } else {
        None
    };
    let (status, namespace) = match without {
        Some(reason) => (
            run_direct(&mut job, plan_dir)?,
            Namespace {
                used: false,
                reason: Some(reason),
            },
        ),
        None => in_namespace(&mut job, plan_dir, opts, out)?,
    };
    // Ctrl-C, kill, a closed terminal: forwarded to the staging step, which
    // died of it. Stop here (the temporary files go as the build returns).
    if let ExitStatus::Signaled(sig) = status {
        if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&sig) {
            return Err(Interrupted(sig).into());
        }
    }
    let result: StageResult = std::fs::read(&job.result)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| anyhow!("the staging step ended with {status} without a result"))?;
    if let Some(e) = &result.error {
        bail!("staging failed: {e}");
    }
    Ok(Staged {
        result,
        status,
        direct: job.direct,
        namespace,
        warnings,
    })
}

/// How long the staging step has to end after a forwarded signal.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the staging step in the sandbox. With `--map auto`, where no user
/// namespace can be had (emulation, a sysctl, seccomp or an LSM, a
/// chroot: [`rootbox_sandbox::Error::no_namespace_reason`]), it runs in this process
/// instead, and says so once, in one line; an explicit `--map` fails with
/// the cause.
fn in_namespace(
    job: &mut StageJob,
    plan_dir: &Path,
    opts: &Options,
    out: &Target,
) -> Result<(ExitStatus, Namespace)> {
    let job_path = plan_dir.join("job.json");
    std::fs::write(&job_path, serde_json::to_vec(&*job)?)?;
    if opts.map == MapMode::Subrange {
        // You are not mapped in this namespace: root there is the first
        // id of your range, and meets your files as "others".
        open_to_the_namespace(plan_dir, &job.result, &job.scratch, out)?;
    }
    let tool = job.make.tool();
    tracing::debug!("staging and running {tool} in the sandbox");
    // A forwarded Ctrl-C or kill must end the build: a step that does not
    // end within STOP_GRACE of it is killed, with its PID namespace.
    let sandbox = Sandbox::new()
        .map(opts.map)
        .unshare_pid()
        .command([
            OsString::from("/proc/self/exe"),
            "__stage".into(),
            job_path.into(),
        ])
        .spawn()
        .and_then(|child| child.wait_stopping_after(STOP_GRACE));
    let used = Namespace {
        used: true,
        reason: None,
    };
    match sandbox {
        Ok(status) => Ok((status, used)),
        Err(e) => match e.no_namespace_reason() {
            Some(reason) if opts.map == MapMode::Auto => {
                tracing::warn!(
                    "no user namespace: {reason}; the build continues without one (as \
                     --no-userns), with the owners a namespace would give"
                );
                let status = run_direct(job, plan_dir)?;
                Ok((
                    status,
                    Namespace {
                        used: false,
                        reason: Some(reason),
                    },
                ))
            }
            _ => {
                // The thread count alone does not say emulation: the reason does.
                let why = match &e {
                    rootbox_sandbox::Error::MultiThreaded { .. } => e
                        .no_namespace_reason()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                Err(e).context(format!(
                    "cannot start the build sandbox{why} (`rootbox doctor` checks this \
                     machine; --no-userns builds without one)"
                ))
            }
        },
    }
}

/// Runs the staging step without a user namespace: no mounts, so the tree
/// is staged on disk in scratch space, by copying. It runs as `rootbox
/// __stage JOB` in a process group of its own, which a Ctrl-C or kill of
/// this process is forwarded to ([`wait_forwarding`]): the tool it runs
/// stops with it (a namespace build has its PID namespace for that), and
/// this process lives on to remove scratch space.
fn run_direct(job: &mut StageJob, plan_dir: &Path) -> Result<ExitStatus> {
    job.direct = true;
    job.stage_dir = job.scratch.join("stage");
    std::fs::create_dir_all(&job.stage_dir)
        .context("creating the staging directory in scratch space")?;
    let job_path = plan_dir.join("job.json");
    std::fs::write(&job_path, serde_json::to_vec(&*job)?)?;
    tracing::debug!("staging by copying, without a user namespace");
    let stops = Stops::block().context("blocking the signals that stop a build")?;
    // /proc is there: the output is an unnamed file that tools reach as
    // /proc/self/fd/N.
    let child = std::process::Command::new("/proc/self/exe")
        .arg("__stage")
        .arg(&job_path)
        .process_group(0)
        .spawn();
    let status = match child {
        Ok(child) => wait_forwarding(child, &stops),
        Err(e) => Err(e).context("starting the staging step (rootbox __stage)"),
    };
    stops.restore();
    status
}

/// SIGINT, SIGTERM and SIGHUP blocked in this (single-threaded) process
/// and read from a signalfd while the staging step runs; the child
/// inherits the blocked mask and unblocks them as it starts
/// ([`super::stage::main`]).
struct Stops {
    fd: SignalFd,
    before: SigSet,
}

impl Stops {
    fn block() -> nix::Result<Stops> {
        let mut set = SigSet::empty();
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(sig);
        }
        let before = set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Stops { fd, before })
    }

    /// The signals that came, each once, in order.
    fn read(&self) -> Vec<Signal> {
        let mut got = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                got.push(sig);
            }
        }
        got
    }

    /// The mask as it was. A signal still pending (none: [`Self::read`]
    /// took them) would take its default action now.
    fn restore(self) {
        let _ = self.read();
        let _ = self.before.thread_set_mask();
    }
}

/// Waits for the staging step `child`, forwarding every stopping signal
/// to its process group; one that has not ended STOP_GRACE after the
/// first is killed. The status is then that of the forwarded signal, as
/// [`rootbox_sandbox::Child::wait_stopping_after`] reports it.
fn wait_forwarding(mut child: std::process::Child, stops: &Stops) -> Result<ExitStatus> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stopping: Option<(std::time::Instant, Signal)> = None;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the staging step")? {
            return Ok(match (stopping, status.code(), status.signal()) {
                (Some((_, sig)), ..) => ExitStatus::Signaled(sig as i32),
                (None, Some(code), _) => ExitStatus::Exited(code),
                (None, None, sig) => ExitStatus::Signaled(sig.unwrap_or(libc::SIGKILL)),
            });
        }
        let mut fds = [PollFd::new(stops.fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u8));
        for sig in stops.read() {
            tracing::debug!("forwarding {sig} to the staging step");
            let _ = nix::sys::signal::killpg(group, sig);
            stopping.get_or_insert((std::time::Instant::now() + STOP_GRACE, sig));
        }
        if stopping.is_some_and(|(deadline, _)| std::time::Instant::now() >= deadline) {
            tracing::debug!("the staging step did not end after the signal: killing it");
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        }
    }
}

/// With `--map subrange` the caller is not mapped into the namespace, so
/// the staging step reaches the caller's files with the "others" bits: the
/// plan directory becomes traversable, the result file writable, scratch
/// space a sticky shared directory, and the unnamed image file writable
/// (it has no name, so nobody else can open it; 0644 again when published).
fn open_to_the_namespace(
    plan_dir: &Path,
    result: &Path,
    scratch: &Path,
    out: &Target,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", p.display()))
    };
    set(plan_dir, 0o711)?;
    std::fs::write(result, b"").with_context(|| format!("creating {}", result.display()))?;
    set(result, 0o666)?;
    set(&plan_dir.join("job.json"), 0o644)?;
    if plan_dir.join("registration").exists() {
        set(&plan_dir.join("registration"), 0o644)?;
    }
    set(scratch, 0o1777)?;
    out.share_with_namespace()
}
