//! rootbox: filesystem images owned by root, built without being root.
//!
//! The `rootbox` binary is a thin `main` over this crate ([`cli::main`]).
//! The pipelines are [`pipeline::build`] (one image from a
//! [`pipeline::BuildRequest`]) and [`disk::make`] (a partitioned disk from
//! a [`rootbox_images::disk::DiskSpec`]). What both share sits here: the
//! output image written beside its path and published only on success
//! ([`output`]), a build stopped by a signal ([`interrupted`]), and the
//! reproducible options and `SOURCE_DATE_EPOCH` ([`reproducible`]).
//!
//! # Embedding
//!
//! A build runs its staging step in a sandbox by re-executing the running
//! program (`/proc/self/exe`) with one of rootbox's internal arguments.
//! Inside another program that program is re-executed, so its `main` must
//! hand those runs to rootbox first, before it starts any thread (a user
//! namespace cannot be made by a multi-threaded process):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     if let Some(code) = rootbox::internal_step() {
//!         return code;
//!     }
//!     // … the program's own work, which may call rootbox::pipeline::build …
//!     std::process::ExitCode::SUCCESS
//! }
//! ```
//!
//! `runner/examples/embed.rs` is a whole program that builds an image and
//! a disk this way.

#![forbid(unsafe_code)]

pub mod cli;
mod completions;
pub mod disk;
mod doctor;
mod error_text;
mod fs;
mod inspect;
pub mod interrupted;
pub mod output;
pub mod pipeline;
pub mod reproducible;
mod run;

/// Runs rootbox's internal step when this process was started as one
/// (`PROGRAM __stage JOB`, …) and returns its exit code; `None` for any
/// other command line. A program that embeds the pipelines calls this
/// first thing in `main` (see the crate docs).
pub fn internal_step() -> Option<std::process::ExitCode> {
    use clap::CommandFactory;
    let first = std::env::args_os().nth(1)?;
    let first = first.to_str()?;
    let internal = cli::Cli::command()
        .get_subcommands()
        .any(|c| c.is_hide_set() && c.get_name() == first);
    internal.then(cli::main)
}
