//! A rootless sandbox: new user and mount namespaces in which the caller
//! is uid 0, with the bind mounts, tmpfs, proc and /dev a command needs.
//! It is what lets an ordinary user (or a Nix build) run `chown`, `mkfs`
//! or a whole build step "as root" over files it owns, without setuid
//! programs beyond the optional newuidmap/newgidmap.
//!
//! The example is compiled by the doc-tests but not run (`no_run`): it
//! needs a kernel that allows unprivileged user namespaces and a
//! single-threaded process, which a test harness is not.
//!
//! ```no_run
//! use rootbox_sandbox::{MapMode, Sandbox};
//! let status = Sandbox::new()
//!     .map(MapMode::Auto)
//!     .bind("/srv/build", "/build")
//!     .command(["sh", "-c", "chown -R 0:0 /build && ls -ln /build"])
//!     .run()?;
//! std::process::exit(status.code());
//! # Ok::<(), rootbox_sandbox::Error>(())
//! ```
//!
//! Where things happen: [`Sandbox`] (sandbox.rs) collects and checks the
//! description and prepares every record the child runs; idmap.rs decides
//! the uid/gid maps; mounts.rs holds the mount records and makes them;
//! process.rs is the clone/exec dance in one place, its processes talking
//! through channel.rs's typed messages; sys.rs holds the few raw system
//! calls (the only `unsafe` code); diagnose.rs turns kernel refusals into
//! causes and remedies; oci.rs (cargo feature `oci`) converts to and from
//! OCI runtime configurations.
//!
//! Sandboxes must be started from a single-threaded process (see
//! [`Sandbox::spawn`]).

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod channel;
mod diagnose;
mod error;
mod idmap;
mod mounts;
#[cfg(feature = "oci")]
mod oci;
mod process;
mod sandbox;
#[allow(unsafe_code)]
mod sys;

pub use diagnose::{diagnose_clone, diagnose_map, emulator, find_program, Diagnosis, HostFacts};
pub use error::{Error, Result};
pub use idmap::{parse_subid, IdMap, IdRange, MapMode, SubRange};
pub use mounts::{seal_readonly, MountOp};
/// An OCI runtime configuration (`config.json`), as the `oci-spec` crate
/// models it; see [`Sandbox::to_oci`] and [`Sandbox::from_oci`].
#[cfg(feature = "oci")]
pub use oci_spec::runtime::Spec as OciSpec;
pub use process::{Child, ExitStatus};
pub use sandbox::{Namespaces, Sandbox, Stdio};
