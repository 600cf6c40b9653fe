//! `rootbox run`: a command in the sandbox, with mounts that read like
//! bubblewrap's.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, ArgMatches, Args};
use rootbox_sandbox::{MapMode, MountOp, Namespaces, OciSpec, Sandbox};

/// Run a command as root in a new user and mount namespace.
///
/// Mounts are made in the order given. Without --root the command sees
/// the host's file system (with your mounts on top, visible to it only);
/// with --root DIR, DIR becomes / and mount destinations are inside it.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  rootbox run -- id -u                          # prints 0
  rootbox run --bind ./out /out -- chown -R 0:0 /out
  rootbox run --root ./rootfs --proc /proc --dev /dev --tmpfs /tmp -- /bin/sh
  rootbox run --map subid -- chown 1000:100 /tmp/x
  rootbox run --print-oci-config --ro-bind /usr /usr -- true > config.json
  rootbox run --oci-config config.json

Exit status: the command's, or 128+N when it was killed by signal N;
125 when the sandbox could not be set up, 127 when the command was not found.")]
pub struct RunArgs {
    /// Bind host path SRC onto DST (writable).
    #[arg(long, num_args = 2, value_names = ["SRC", "DST"], action = ArgAction::Append)]
    bind: Vec<PathBuf>,
    /// Bind host path SRC onto DST, read-only (recursively).
    #[arg(long, num_args = 2, value_names = ["SRC", "DST"], action = ArgAction::Append)]
    ro_bind: Vec<PathBuf>,
    /// Mount a new tmpfs on DST.
    #[arg(long, value_name = "DST", action = ArgAction::Append)]
    tmpfs: Vec<PathBuf>,
    /// Mount procfs on DST (a new one with --unshare-pid).
    #[arg(long, value_name = "DST", action = ArgAction::Append)]
    proc: Vec<PathBuf>,
    /// Mount a minimal /dev (null, zero, full, random, urandom, tty) on DST.
    #[arg(long, value_name = "DST", action = ArgAction::Append)]
    dev: Vec<PathBuf>,
    /// Use host directory DIR as the new root (pivot_root).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Working directory of the command, inside the sandbox.
    #[arg(long, value_name = "DIR")]
    chdir: Option<PathBuf>,
    /// Set environment variable KEY to VALUE.
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"], action = ArgAction::Append)]
    setenv: Vec<String>,
    /// Remove environment variable KEY.
    #[arg(long, value_name = "KEY", action = ArgAction::Append)]
    unsetenv: Vec<String>,
    /// Start with an empty environment.
    #[arg(long)]
    clearenv: bool,
    /// How ids are mapped: auto (subordinate range if /etc/subuid grants
    /// one and newuidmap works, else single), single (only you, as 0), or
    /// subid (you as 0 and your range as 1..N; fails if unavailable), or
    /// subrange (your range alone from 0, as mmdebstrap --mode=unshare and
    /// podman number a rootless tree; you are not mapped).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    map: MapMode,
    /// New PID namespace (a small init forwards signals and reaps).
    #[arg(long)]
    unshare_pid: bool,
    /// New network namespace (loopback only, down).
    #[arg(long)]
    unshare_net: bool,
    /// New IPC namespace.
    #[arg(long)]
    unshare_ipc: bool,
    /// New UTS namespace.
    #[arg(long)]
    unshare_uts: bool,
    /// Drop all capabilities: the command is uid 0 but cannot mount, chown
    /// or bypass permissions.
    #[arg(long)]
    drop_caps: bool,
    /// Read the sandbox from an OCI runtime config.json (other flags add to it).
    #[arg(long, value_name = "FILE")]
    oci_config: Option<PathBuf>,
    /// Print the sandbox as an OCI runtime config.json instead of running it.
    #[arg(long)]
    print_oci_config: bool,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// The mount flags in command-line order: clap keeps each flag's values
/// apart, so their positions put them back in order.
fn mounts_in_order(args: &RunArgs, m: &ArgMatches) -> Vec<MountOp> {
    let mut ops: Vec<(usize, MountOp)> = Vec::new();
    let idx = |id: &str| {
        m.indices_of(id)
            .map(|i| i.collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for (readonly, id, values) in [
        (false, "bind", &args.bind),
        (true, "ro_bind", &args.ro_bind),
    ] {
        let positions = idx(id);
        for (n, pair) in values.chunks(2).enumerate() {
            let op = MountOp::Bind {
                src: pair[0].clone(),
                dst: pair[1].clone(),
                readonly,
            };
            ops.push((positions[n * 2], op));
        }
    }
    // A flag naming one path a value: its id, its values, the op it makes.
    type Single<'a> = (&'a str, &'a Vec<PathBuf>, fn(PathBuf) -> MountOp);
    let singles: [Single; 3] = [
        ("tmpfs", &args.tmpfs, |dst| MountOp::Tmpfs { dst }),
        ("proc", &args.proc, |dst| MountOp::Proc { dst }),
        ("dev", &args.dev, |dst| MountOp::Dev { dst }),
    ];
    for (id, values, make) in singles {
        for (pos, dst) in idx(id).into_iter().zip(values) {
            ops.push((pos, make(dst.clone())));
        }
    }
    ops.sort_by_key(|(pos, _)| *pos);
    ops.into_iter().map(|(_, op)| op).collect()
}

fn sandbox_from(args: &RunArgs, m: &ArgMatches) -> Result<Sandbox> {
    let mut sb = match &args.oci_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading OCI config {}", path.display()))?;
            let spec: OciSpec = serde_json::from_str(&text)
                .with_context(|| format!("parsing OCI config {}", path.display()))?;
            Sandbox::from_oci(&spec).with_context(|| format!("OCI config {}", path.display()))?
        }
        None => Sandbox::new(),
    };
    if args.oci_config.is_none()
        || m.value_source("map") == Some(clap::parser::ValueSource::CommandLine)
    {
        sb = sb.map(args.map);
    }
    for op in mounts_in_order(args, m) {
        sb = sb.mount(op);
    }
    if let Some(root) = &args.root {
        sb = sb.root(root);
    }
    if let Some(dir) = &args.chdir {
        sb = sb.chdir(dir);
    }
    if args.clearenv {
        sb = sb.clear_env();
    }
    for kv in args.setenv.chunks(2) {
        sb = sb.env(&kv[0], &kv[1]);
    }
    for k in &args.unsetenv {
        sb = sb.unsetenv(k);
    }
    if args.unshare_pid || args.unshare_net || args.unshare_ipc || args.unshare_uts {
        sb = sb.namespaces(Namespaces {
            pid: args.unshare_pid,
            net: args.unshare_net,
            ipc: args.unshare_ipc,
            uts: args.unshare_uts,
        });
    }
    if args.drop_caps {
        sb = sb.drop_caps(true);
    }
    if !args.command.is_empty() {
        sb = sb.command(&args.command);
    }
    Ok(sb)
}

pub fn main(args: &RunArgs, m: &ArgMatches) -> Result<ExitCode> {
    let sb = sandbox_from(args, m)?;
    if args.print_oci_config {
        let spec = sb
            .to_oci()
            .context("describing the sandbox as an OCI config")?;
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    if sb.argv().is_empty() {
        bail!("no command given: put it after `--`, e.g. `rootbox run -- id -u`");
    }
    match sb.run() {
        Ok(status) => {
            tracing::debug!("command ended: {status}");
            Ok(ExitCode::from(status.code().clamp(0, 255) as u8))
        }
        Err(e @ rootbox_sandbox::Error::Exec { .. }) => {
            eprintln!("rootbox: error: {e}");
            Ok(ExitCode::from(127))
        }
        Err(e) => {
            eprintln!("rootbox: error: {e}");
            Ok(ExitCode::from(125))
        }
    }
}
