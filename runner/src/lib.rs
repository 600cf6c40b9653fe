//! rootbox: filesystem images owned by root, built without being root.
//!
//! The `rootbox` binary is a thin `main` over this crate ([`cli::main`]).
//! The pipelines are [`pipeline::build`] (one image from a
//! [`pipeline::BuildRequest`]) and [`disk::make`] (a partitioned disk from
//! a [`rootbox_images::disk::DiskSpec`]).

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
