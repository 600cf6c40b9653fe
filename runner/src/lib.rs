//! rootbox: filesystem images owned by root, built without being root.
//!
//! The `rootbox` binary is a thin `main` over this crate ([`cli::main`]).
//! The pipelines are [`pipeline::build`] (one image from a
//! [`pipeline::BuildRequest`]) and [`disk::make`] (a partitioned disk from
//! a [`rootbox_images::disk::DiskSpec`]). What both share sits here: the
//! output image written beside its path and published only on success
//! ([`output`]), a build stopped by a signal ([`interrupted`]), and the
//! reproducible options and `SOURCE_DATE_EPOCH` ([`reproducible`]).

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
