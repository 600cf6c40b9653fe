//! The image model of rootbox.
//!
//! Everything here is planning: it reads specs, closures and images, and
//! decides what a build will do. It creates no namespaces and runs no
//! processes; the `rootbox` runner does that.

pub mod btrfs;
pub mod closure;
pub mod layout;
pub mod mkfs;
pub mod nixos;
pub mod owners;
pub mod size;
pub mod spec;
