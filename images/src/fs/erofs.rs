//! erofs: `mkfs.erofs` arguments.
//!
//! mkfs.erofs copies uid, gid, mode, xattrs and device numbers from
//! `lstat`, so in the build's namespace it records what the namespace
//! sees. erofs-utils 1.5 (Debian bookworm) has no per-file owner option
//! (only `--all-root` and `--force-uid/gid` for every file), so the owners
//! the namespace cannot express are written into the inodes after mkfs by
//! the runner; erofs keeps no checksum over inodes (only over the
//! superblock), so such a write leaves a valid image. A compact inode
//! holds 16-bit ids: when the manifest names a larger one, mkfs is told to
//! write extended inodes ([`mkfs_args`]'s `wide_ids`).
//!
//! Reproducible builds: `-T EPOCH` gives every inode and the superblock
//! the same time, `-U` the UUID; mkfs.erofs sorts directory entries.

use std::ffi::OsString;
use std::path::Path;

use super::{Filesystem, FsError, Options};

/// The compressors of erofs-utils 1.5.
pub const COMPRESSORS: &str = "\"lz4\" or \"lz4hc\" (\"lz4hc:LEVEL\", LEVEL 0–12)";

/// Refuses a label (mkfs.erofs 1.5 cannot set one) and compressors it lacks.
pub fn check(o: &Options) -> Result<(), FsError> {
    if o.label.is_some() {
        return Err(FsError::Unsupported {
            field: "label",
            filesystem: Filesystem::Erofs,
            why: "mkfs.erofs 1.5 cannot set a volume label; remove \"label\" (mount by UUID)"
                .into(),
        });
    }
    compressor(o.compress.as_deref()).map(|_| ())
}

/// The `-z` value for a `compress` setting (`None`: uncompressed).
pub fn compressor(compress: Option<&str>) -> Result<Option<String>, FsError> {
    let Some(c) = compress.filter(|c| *c != "no") else {
        return Ok(None);
    };
    let bad = || FsError::Compression {
        filesystem: Filesystem::Erofs,
        given: c.to_string(),
        choices: COMPRESSORS,
    };
    let (alg, level) = match c.split_once(':') {
        Some((a, l)) => (a, Some(l)),
        None => (c, None),
    };
    match (alg, level) {
        ("lz4", None) => Ok(Some("lz4".into())),
        ("lz4hc", None) => Ok(Some("lz4hc".into())),
        ("lz4hc", Some(l)) => match l.parse::<u8>() {
            Ok(n) if n <= 12 => Ok(Some(format!("lz4hc,{n}"))),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The `mkfs.erofs` arguments that make `image` from `source`; `wide_ids`
/// forces extended inodes (32-bit uid and gid).
pub fn mkfs_args(o: &Options, source: &Path, image: &Path, wide_ids: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["--quiet".into()];
    if let Some(z) = compressor(o.compress.as_deref()).ok().flatten() {
        a.push(format!("-z{z}").into());
    }
    if let Some(r) = &o.reproducible {
        a.push(format!("-T{}", r.epoch).into());
    }
    if let Some(u) = o.effective_uuid() {
        a.push(format!("-U{u}").into());
    }
    if wide_ids {
        a.push("-Eforce-inode-extended".into());
    }
    a.push(image.into());
    a.push(source.into());
    a
}

/// Whether an id needs an extended inode.
pub fn is_wide(id: u32) -> bool {
    id > u32::from(u16::MAX)
}

/// The longest name `mkfs.erofs` of `version` writes: erofs holds names
/// of 255 bytes (`NAME_MAX`), but erofs-utils 1.5 (Debian bookworm's)
/// fails on one with "Could not format the device" (254 work).
pub fn name_limit(version: (u32, u32, u32)) -> usize {
    if (version.0, version.1) <= (1, 5) {
        super::name::NAME_MAX - 1
    } else {
        super::name::NAME_MAX
    }
}

/// Refuses a name longer than [`name_limit`] for `version`; `path` is the
/// path as the user gave it.
pub fn check_name(version: (u32, u32, u32), path: &str, name: &[u8]) -> Result<(), FsError> {
    let limit = name_limit(version);
    if name.len() <= limit {
        return Ok(());
    }
    Err(FsError::ToolNameLimit {
        filesystem: Filesystem::Erofs,
        path: path.to_string(),
        len: name.len(),
        limit,
        version: format!("{}.{}", version.0, version.1),
        package: "erofs-utils",
    })
}

#[cfg(test)]
mod tests {
    use super::super::Reproducible;
    use super::*;

    #[test]
    fn erofs_utils_1_5_is_refused_a_255_byte_name_by_name() {
        let long = [b'x'; 255];
        assert!(check_name((1, 5, 0), "r/a", &long[..254]).is_ok());
        let e = check_name((1, 5, 0), "rootfs/srv/xxx", &long)
            .unwrap_err()
            .to_string();
        for needle in [
            "rootfs/srv/xxx",
            "255 bytes",
            "mkfs.erofs 1.5",
            "up to 254",
            "newer erofs-utils",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
        assert!(check_name((1, 7, 1), "r/a", &long).is_ok());
    }

    #[test]
    fn compressors_of_erofs_utils_1_5() {
        assert_eq!(
            compressor(Some("lz4hc:9")).unwrap().as_deref(),
            Some("lz4hc,9")
        );
        assert_eq!(compressor(Some("lz4")).unwrap().as_deref(), Some("lz4"));
        let e = compressor(Some("zstd:3")).unwrap_err().to_string();
        assert!(e.contains("\"zstd:3\" is not available for erofs"), "{e}");
        assert!(compressor(Some("lz4hc:13")).is_err());
    }

    #[test]
    fn reproducible_arguments() {
        let o = Options {
            compress: Some("lz4hc".into()),
            reproducible: Some(Reproducible {
                epoch: 42,
                uuid: "11111111-2222-4333-8444-555555555555".into(),
            }),
            ..Options::default()
        };
        let a: Vec<String> = mkfs_args(&o, Path::new("/s"), Path::new("/i"), true)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            a.join(" "),
            "--quiet -zlz4hc -T42 -U11111111-2222-4333-8444-555555555555 \
             -Eforce-inode-extended /i /s"
        );
    }

    #[test]
    fn a_label_is_refused_by_name() {
        let o = Options {
            label: Some("nixos".into()),
            ..Options::default()
        };
        let e = check(&o).unwrap_err().to_string();
        assert!(e.starts_with("\"label\" cannot be used with erofs"), "{e}");
    }
}
