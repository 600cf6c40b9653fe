//! How to make a disk, beyond its spec: what `rootbox disk`'s flags set,
//! and what a program embedding rootbox fills in itself.

use std::path::PathBuf;

use rootbox_sandbox::MapMode;

pub use crate::reproducible::Reproducible;

/// How to make a disk, beyond the spec.
pub struct Options {
    /// Replace an existing output.
    pub force: bool,
    /// Also write bmaptool's block map there.
    pub bmap: Option<PathBuf>,
    /// Write the disk compressed.
    pub compress: Option<Compression>,
    /// How ids are mapped for the partitions' builds.
    pub map: MapMode,
    /// Set for a reproducible disk.
    pub reproducible: Option<Reproducible>,
}

/// Output compression.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Compression {
    /// Multithreaded zstd.
    Zstd,
}
