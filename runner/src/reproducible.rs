//! Reproducible images, for both pipelines (`pipeline` and `disk`): the
//! options a request carries and the one reading of `SOURCE_DATE_EPOCH`.

use anyhow::{anyhow, Result};

/// How a reproducible image is made.
#[derive(Debug, Clone)]
pub struct Reproducible {
    /// Times above it are clamped to it; None: the newest source mtime.
    pub epoch: Option<i64>,
    /// Explicit seed, else one derived from the spec.
    pub seed: Option<String>,
    /// Asked for with `--reproducible`; false: SOURCE_DATE_EPOCH alone,
    /// which every nixpkgs stdenv build sets, and which never makes the
    /// build copy its sources.
    pub explicit: bool,
}

/// `SOURCE_DATE_EPOCH` from the environment, if set: the build's and the
/// disk's one reading of it.
pub fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Ok(Some(v.trim().parse::<i64>().map_err(|_| {
            anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?)),
        Err(_) => Ok(None),
    }
}
