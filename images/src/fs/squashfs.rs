//! squashfs: `mksquashfs` arguments and the pseudo-file definitions that
//! set owners at mkfs time.
//!
//! A squashfs image is not edited after mksquashfs (its inode table is
//! compressed), so every owner the namespace cannot express is given to
//! mksquashfs up front: one `PATH m MODE UID GID` definition per path in a
//! `-pf` file ([`pseudo_file`]), the root directory through `-root-uid`,
//! `-root-gid` and `-root-mode`. mksquashfs copies xattrs and device
//! numbers from the staged tree and sorts directory entries.
//!
//! Reproducible builds (squashfs-tools ≥ 4.4): `-reproducible`,
//! `-mkfs-time EPOCH` and `-all-time EPOCH`. squashfs has no label and no
//! UUID: both are refused.

use std::ffi::OsString;
use std::path::Path;

use super::{Filesystem, Fix, FsError, Name, Options};

/// The compressors of squashfs-tools 4.5.
pub const COMPRESSORS: &str = "\"gzip\", \"lzo\", \"lz4\", \"xz\", \"lzma\", \"zstd\" or \"no\" \
                               (\"gzip:LEVEL\" 1–9, \"zstd:LEVEL\" 1–22)";

/// Refuses a label, a UUID and compressors mksquashfs lacks.
pub fn check(o: &Options) -> Result<(), FsError> {
    for (field, set) in [("label", o.label.is_some()), ("uuid", o.uuid.is_some())] {
        if set {
            return Err(FsError::Unsupported {
                field,
                filesystem: Filesystem::Squashfs,
                why: format!("squashfs has no {field}; remove \"{field}\""),
            });
        }
    }
    compression_args(o.compress.as_deref()).map(|_| ())
}

/// The `-comp` (and level) arguments for a `compress` setting; mksquashfs's
/// default (gzip) when there is none.
pub fn compression_args(compress: Option<&str>) -> Result<Vec<String>, FsError> {
    let Some(c) = compress else {
        return Ok(Vec::new());
    };
    if c == "no" {
        return Ok(["-noI", "-noD", "-noF", "-noX"].map(String::from).to_vec());
    }
    let bad = || FsError::Compression {
        filesystem: Filesystem::Squashfs,
        given: c.to_string(),
        choices: COMPRESSORS,
    };
    let (alg, level) = match c.split_once(':') {
        Some((a, l)) => (a, Some(l.parse::<u32>().map_err(|_| bad())?)),
        None => (c, None),
    };
    // btrfs's name for it (a spec's `compress` is written for btrfs first).
    let alg = if alg == "zlib" { "gzip" } else { alg };
    let max = match alg {
        "gzip" => 9,
        "zstd" => 22,
        "lzo" | "lz4" | "xz" | "lzma" => 0,
        _ => return Err(bad()),
    };
    let mut a = vec!["-comp".to_string(), alg.to_string()];
    match level {
        Some(l) if (1..=max).contains(&l) => {
            a.push("-Xcompression-level".into());
            a.push(l.to_string());
        }
        Some(_) => return Err(bad()),
        None => {}
    }
    Ok(a)
}

/// The `mksquashfs` arguments that make `image` from `source`, with the
/// pseudo file at `pseudo` and the root directory's fix, if any.
pub fn mkfs_args(
    o: &Options,
    source: &Path,
    image: &Path,
    pseudo: &Path,
    root: Option<&Fix>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![source.into(), image.into()];
    for s in [
        "-noappend",
        "-no-progress",
        "-quiet",
        "-no-recovery",
        "-reproducible",
    ] {
        a.push(s.into());
    }
    a.extend(
        compression_args(o.compress.as_deref())
            .unwrap_or_default()
            .into_iter()
            .map(OsString::from),
    );
    if let Some(r) = &o.reproducible {
        for f in ["-mkfs-time", "-all-time"] {
            a.push(f.into());
            a.push(r.epoch.to_string().into());
        }
    }
    if let Some(f) = root {
        a.push("-root-uid".into());
        a.push(f.uid.to_string().into());
        a.push("-root-gid".into());
        a.push(f.gid.to_string().into());
        a.push("-root-mode".into());
        a.push(format!("{:o}", f.mode & 0o7777).into());
    }
    a.push("-pf".into());
    a.push(pseudo.into());
    a
}

/// A device node given to mksquashfs as a pseudo definition (`PATH c
/// MODE UID GID MAJOR MINOR`), for a build without a user namespace,
/// whose staging cannot make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The image path.
    pub path: Name,
    /// The whole `st_mode` (`S_IFCHR` or `S_IFBLK` and the permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The device number.
    pub major: u32,
    /// The device number.
    pub minor: u32,
}

/// The first mksquashfs with pseudo xattr definitions (`PATH x NAME=VALUE`).
pub const XATTR_PSEUDO: (u32, u32, u32) = (4, 6, 0);

/// The pseudo definitions, as bytes (names need not be UTF-8): `"PATH" m
/// MODE UID GID` for every fix but the root's (which [`mkfs_args`] takes)
/// and but the `nodes`' paths, `"PATH" c|b MODE UID GID MAJOR MINOR` for
/// each of `nodes`, and `"PATH" x NAME=0xHEX` for each of `xattrs`
/// (mksquashfs ≥ [`XATTR_PSEUDO`]). Paths are quoted, `"` and `\`
/// escaped; mksquashfs reads the file line by line, so a newline cannot
/// be written and is refused.
pub fn pseudo_file(
    fixes: &[Fix],
    nodes: &[Node],
    xattrs: &[(Name, &str, Vec<u8>)],
) -> Result<Vec<u8>, FsError> {
    let mut s = Vec::new();
    let is_node = |p: &Name| nodes.iter().any(|n| &n.path == p);
    for f in fixes.iter().filter(|f| f.path != "/" && !is_node(&f.path)) {
        quoted(&mut s, &f.path)?;
        s.extend_from_slice(format!(" m {:o} {} {}\n", f.mode & 0o7777, f.uid, f.gid).as_bytes());
    }
    for n in nodes {
        quoted(&mut s, &n.path)?;
        let kind = if n.mode & 0o170000 == 0o060000 {
            'b'
        } else {
            'c'
        };
        s.extend_from_slice(
            format!(
                " {kind} {:o} {} {} {} {}\n",
                n.mode & 0o7777,
                n.uid,
                n.gid,
                n.major,
                n.minor
            )
            .as_bytes(),
        );
    }
    for (path, name, value) in xattrs {
        quoted(&mut s, path)?;
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        s.extend_from_slice(format!(" x {name}=0x{hex}\n").as_bytes());
    }
    Ok(s)
}

/// Appends `"PATH"` (relative to the root, `"` and `\` escaped).
fn quoted(s: &mut Vec<u8>, path: &Name) -> Result<(), FsError> {
    if path.contains(b'\n') {
        return Err(FsError::PathSyntax {
            path: path.clone(),
            tool: "mksquashfs",
            why: "it contains a newline, and mksquashfs reads its pseudo definitions line by line",
        });
    }
    let rel = path
        .as_bytes()
        .strip_prefix(b"/")
        .unwrap_or(path.as_bytes());
    s.push(b'"');
    for &c in rel {
        if c == b'\\' || c == b'"' {
            s.push(b'\\');
        }
        s.push(c);
    }
    s.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Name;

    fn fix(path: &str, uid: u32, gid: u32, mode: u32) -> Fix {
        Fix {
            path: path.into(),
            uid,
            gid,
            mode,
            unmapped: true,
            manifest_line: None,
        }
    }

    #[test]
    fn pseudo_definitions_quote_paths() {
        let fixes = [
            fix("/", 0, 0, 0o40755),
            fix("/home/alice", 1000, 100, 0o40700),
            fix("/odd \"name\"\\", 0, 0, 0o100644),
        ];
        assert_eq!(
            pseudo_file(&fixes, &[], &[]).unwrap(),
            b"\"home/alice\" m 700 1000 100\n\"odd \\\"name\\\"\\\\\" m 644 0 0\n"
        );
        let latin1 = Fix {
            path: Name::from_bytes(&b"/caf\xe9"[..]),
            ..fix("/", 0, 0, 0o100644)
        };
        assert_eq!(
            pseudo_file(&[latin1], &[], &[]).unwrap(),
            b"\"caf\xe9\" m 644 0 0\n"
        );
        let e = pseudo_file(&[fix("/a\nb", 0, 0, 0o100644)], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("newline"), "{e}");
    }

    #[test]
    fn device_nodes_and_xattrs_as_pseudo_definitions() {
        let fixes = [
            fix("/dev/null", 0, 0, 0o20666),
            fix("/dev/loop0", 0, 6, 0o60660),
            fix("/ping", 0, 0, 0o100755),
        ];
        let node = |path: &str, mode, gid, major, minor| Node {
            path: path.into(),
            mode,
            uid: 0,
            gid,
            major,
            minor,
        };
        let nodes = [
            node("/dev/null", 0o20666, 0, 1, 3),
            node("/dev/loop0", 0o60660, 6, 7, 0),
        ];
        let caps = [(Name::from("/ping"), "security.capability", vec![1, 0xab])];
        assert_eq!(
            String::from_utf8(pseudo_file(&fixes, &nodes, &caps).unwrap()).unwrap(),
            "\"ping\" m 755 0 0\n\"dev/null\" c 666 0 0 1 3\n\"dev/loop0\" b 660 0 6 7 0\n\
             \"ping\" x security.capability=0x01ab\n"
        );
    }

    #[test]
    fn compression_levels_per_compressor() {
        assert_eq!(
            compression_args(Some("zstd:19")).unwrap(),
            ["-comp", "zstd", "-Xcompression-level", "19"]
        );
        assert_eq!(compression_args(Some("xz")).unwrap(), ["-comp", "xz"]);
        assert_eq!(
            compression_args(Some("zlib:9")).unwrap(),
            ["-comp", "gzip", "-Xcompression-level", "9"]
        );
        assert_eq!(compression_args(Some("no")).unwrap()[0], "-noI");
        for bad in ["xz:3", "zstd:23", "gzip:x", "brotli"] {
            let e = compression_args(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("is not available for squashfs"), "{bad}: {e}");
        }
    }

    #[test]
    fn label_and_uuid_are_refused_by_name() {
        let o = Options {
            uuid: Some("11111111-2222-4333-8444-555555555555".into()),
            ..Options::default()
        };
        let e = check(&o).unwrap_err().to_string();
        assert!(
            e.starts_with("\"uuid\" cannot be used with squashfs"),
            "{e}"
        );
    }
}
