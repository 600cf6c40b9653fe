//! The image model of rootbox: the build spec, the subvolume layout, NixOS
//! `fileSystems`, closures, ownership manifests, sizes and mkfs arguments;
//! and the disk model ([`disk`]: partition tables, their bytes).
//!
//! It reads and checks inputs and decides what a build will do; it creates
//! no namespaces and runs no processes (the `rootbox` runner does that), and
//! it knows nothing of the btrfs on-disk format (`rootbox-btrfs` does).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod closure;
pub mod disk;
pub mod fs;
pub mod layout;
pub mod nixos;
pub mod owners;
pub mod size;
pub mod spec;

/// The btrfs plan under its earlier name ([`fs::btrfs`]): `rootbox doctor`
/// and other callers read [`fs::btrfs::BtrfsProgsVersion`] through it.
pub use fs::btrfs as mkfs;
