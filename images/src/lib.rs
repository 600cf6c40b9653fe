//! The image model of rootbox: the build spec, the subvolume layout, NixOS
//! `fileSystems`, closures, ownership manifests, sizes and mkfs arguments;
//! and the disk model ([`disk`]: partition tables, their bytes).
//!
//! It reads and checks inputs and decides what a build will do; it creates
//! no namespaces and runs no processes (the `rootbox` runner does that), and
//! it knows nothing of the btrfs on-disk format (`rootbox-btrfs` does).
//!
//! A spec as `rootbox build --spec` reads it, checked, and the subvolume
//! arguments mkfs.btrfs gets for it (this runs as a doc-test; nothing
//! here needs privileges):
//!
//! ```
//! use rootbox_images::layout::Layout;
//! use rootbox_images::spec::Spec;
//!
//! let spec = Spec::from_json_str(
//!     r#"{"label": "nixos", "rootfs": "root", "subvolumes": [
//!         {"name": "@", "mountpoint": "/", "type": "default"},
//!         {"name": "@nix", "mountpoint": "/nix"}]}"#,
//!     "image.json",
//! )?;
//! let layout = Layout::new(&spec.subvolumes)?;
//! assert_eq!(layout.mkfs_subvol_args(), ["default:@", "rw:@nix"]);
//!
//! // A mistake names the spec and the field.
//! let err = Spec::from_json_str(r#"{"lable": "nixos"}"#, "image.json").unwrap_err();
//! assert!(err.to_string().contains("image.json"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod closure;
pub mod disk;
pub mod fs;
mod image_path;
pub mod layout;
pub mod nixos;
pub mod owners;
pub mod repart;
pub mod size;
pub mod spec;

/// The btrfs plan under its earlier name ([`fs::btrfs`]): `rootbox doctor`
/// and other callers read [`fs::btrfs::BtrfsProgsVersion`] through it.
pub use fs::btrfs as mkfs;
