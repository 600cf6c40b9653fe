//! One repart.d file's `[Partition]` keys read into a [`Definition`]:
//! each value parsed as repart parses it (booleans, sizes with base-1024
//! suffixes, paths), each key repart has but rootbox does not do refused
//! with the reason, and every value kept with its line for later errors.

use std::path::PathBuf;

use super::error::Problem;
use super::ini::Assignment;
use super::types::{self, RepartType};

/// A value and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// Its line, from 1.
    pub line: usize,
}

impl<T> At<T> {
    /// `value` from line `line`.
    pub fn new(line: usize, value: T) -> At<T> {
        At { value, line }
    }
}

/// `Verity=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verity {
    /// The data partition.
    Data,
    /// The hash partition.
    Hash,
}

/// `Minimize=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Minimize {
    /// Not minimized: repart's 10M default minimum applies.
    Off,
    /// `best` or `guess`: as small as the content.
    On,
}

/// One `CopyFiles=SOURCE[:TARGET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The source, absolute (taken below `--copy-source`/`--root`).
    pub source: String,
    /// The target in the new filesystem, absolute.
    pub target: String,
}

/// One definition file, read.
#[derive(Debug, Clone, Default)]
pub struct Definition {
    /// `Type=`.
    pub kind: Option<At<RepartType>>,
    /// `Label=`.
    pub label: Option<At<String>>,
    /// `UUID=`.
    pub uuid: Option<At<crate::disk::types::Guid>>,
    /// `SizeMinBytes=`.
    pub size_min: Option<At<u64>>,
    /// `SizeMaxBytes=`.
    pub size_max: Option<At<u64>>,
    /// `Format=`.
    pub format: Option<At<String>>,
    /// `CopyFiles=`, in order.
    pub copy_files: Vec<At<Copy>>,
    /// `ExcludeFiles=`.
    pub exclude: Vec<At<String>>,
    /// `CopyBlocks=`.
    pub copy_blocks: Option<At<PathBuf>>,
    /// `Subvolumes=`.
    pub subvolumes: Vec<At<String>>,
    /// `MakeDirectories=` (rootbox takes only subvolume paths).
    pub make_dirs: Vec<At<String>>,
    /// `DefaultSubvolume=`.
    pub default_subvolume: Option<At<String>>,
    /// `Minimize=`.
    pub minimize: Option<Minimize>,
    /// `Verity=` (None: off).
    pub verity: Option<At<Verity>>,
    /// `VerityMatchKey=`.
    pub verity_key: Option<At<String>>,
    /// `Flags=`.
    pub flags: Option<At<u64>>,
    /// `NoAuto=`.
    pub no_auto: Option<At<bool>>,
    /// `ReadOnly=`.
    pub read_only: Option<At<bool>>,
    /// `GrowFileSystem=`.
    pub grow: Option<At<bool>>,
    /// `SplitName=` as written (`%t` expands to the type's name).
    pub split_name: Option<At<String>>,
    /// `X-Rootbox-StartSector=`.
    pub start_sector: Option<At<u64>>,
    /// `X-Rootbox-Closure=` (relative to the definitions directory).
    pub closure: Option<At<PathBuf>>,
    /// `X-Rootbox-Registration=`: an absolute path in the image.
    pub registration: Option<At<String>>,
    /// `X-Rootbox-Owners=` (relative to the definitions directory).
    pub owners: Option<At<PathBuf>>,
}

/// Keys repart has that rootbox refuses, with the reason and fix.
const REFUSED: &[(&str, &str)] = &[
    ("Encrypt", "rootbox makes no LUKS volumes; drop Encrypt= (or set Encrypt=off) and encrypt at first boot"),
    ("EncryptedVolume", "rootbox makes no LUKS volumes"),
    ("MakeSymlinks", "rootbox builds each filesystem from its tree as it is: create the symlinks in the CopyFiles= source"),
    ("ExcludeFilesTarget", "rootbox cannot drop files from a tree it copies: remove them from the CopyFiles= source"),
    ("PaddingWeight", "free space after a partition is not something rootbox places; set X-Rootbox-StartSector= on the next partition for a gap"),
    ("FactoryReset", "a factory-reset mark has no meaning in a new image rootbox makes"),
    ("Compression", "rootbox picks compression in build specs (\"compress\"), not in repart.d; drop it"),
    ("CompressionLevel", "rootbox picks compression in build specs (\"compress\"), not in repart.d; drop it"),
    ("FileSystemSectorSize", "rootbox makes filesystems with their tools' default sector size"),
    ("VerityDataBlockSizeBytes", "rootbox's dm-verity uses 4096-byte blocks; drop it"),
    ("VerityHashBlockSizeBytes", "rootbox's dm-verity uses 4096-byte blocks; drop it"),
    ("SupplementFor", "rootbox does not merge partition definitions"),
    ("MountPoint", "rootbox writes no fstab or crypttab; drop MountPoint="),
    ("Integrity", "rootbox makes no dm-integrity volumes"),
    ("AddValidateFS", "rootbox does not write the validatefs xattrs; drop it"),
];

/// Reads every assignment of one file into a definition.
pub fn read(
    assignments: &[Assignment],
    arch: &str,
) -> Result<Definition, (usize, String, Problem)> {
    let mut d = Definition::default();
    for a in assignments {
        let err = |p: Problem| (a.line, format!("{}=", a.key), p);
        d.assign(a, arch).map_err(err)?;
    }
    Ok(d)
}

fn value(v: &str, why: &'static str) -> Problem {
    Problem::Value {
        value: v.to_owned(),
        why,
    }
}

/// Refuses `%` specifiers; `%%` is a literal `%`.
pub fn literal(v: &str) -> Result<String, Problem> {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(spec) => {
                return Err(Problem::Specifier {
                    value: v.to_owned(),
                    spec,
                })
            }
            None => {
                return Err(value(
                    v,
                    "a '%' ends the value; write '%%' for a literal '%'",
                ))
            }
        }
    }
    Ok(out)
}

/// systemd's booleans.
fn boolean(v: &str) -> Result<bool, Problem> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => Err(value(v, "not a boolean: write yes or no")),
    }
}

/// A size with systemd's base-1024 suffixes (`K`, `M`, `G`, `T`, `B`).
fn size(v: &str) -> Result<u64, Problem> {
    let bad = || {
        value(
            v,
            "not a size: write bytes, or a number with K, M, G or T (powers of 1024)",
        )
    };
    let t = v.trim_end_matches('B');
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let s = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], s)
        }
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// An integer in hex (`0x`), binary (`0b`) or decimal.
fn flags(v: &str) -> Result<u64, Problem> {
    let r = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else if let Some(b) = v.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else {
        v.parse()
    };
    r.map_err(|_| {
        value(
            v,
            "not a 64-bit number: write it in hex (0x…), binary (0b…) or decimal",
        )
    })
}

/// An absolute path, normalized (no `.`/`..`, no trailing `/`).
fn absolute(v: &str) -> Result<String, Problem> {
    if !v.starts_with('/') {
        return Err(value(v, "not an absolute path: start it with '/'"));
    }
    let parts: Vec<&str> = v
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(value(v, "'..' in a path: write the path without it"));
    }
    Ok(format!("/{}", parts.join("/")))
}

impl Definition {
    fn assign(&mut self, a: &Assignment, arch: &str) -> Result<(), Problem> {
        let (v, line) = (a.value.as_str(), a.line);
        let empty = v.is_empty();
        match a.key.as_str() {
            "Type" => {
                let t =
                    types::resolve(v, arch).ok_or_else(|| Problem::UnknownType(v.to_owned()))?;
                self.kind = Some(At::new(line, t));
            }
            "Label" => {
                self.label = (!empty)
                    .then(|| literal(v))
                    .transpose()?
                    .map(|x| At { value: x, line })
            }
            "UUID" => {
                let g = v.to_ascii_uppercase().parse().map_err(|_| {
                    value(
                        v,
                        "not a UUID: write 8-4-4-4-12 hex digits (rootbox does not take \"null\")",
                    )
                })?;
                self.uuid = Some(At::new(line, g));
            }
            "Priority" | "Weight" => {
                // They share out free space; with --size=auto (all rootbox
                // makes) there is none, so they change nothing.
                v.parse::<i64>().map_err(|_| value(v, "not an integer"))?;
            }
            "SizeMinBytes" => {
                self.size_min = (!empty)
                    .then(|| size(v))
                    .transpose()?
                    .map(|x| At { value: x, line })
            }
            "SizeMaxBytes" => {
                self.size_max = (!empty)
                    .then(|| size(v))
                    .transpose()?
                    .map(|x| At { value: x, line })
            }
            "PaddingMinBytes" => {
                if !empty && size(v)? != 0 {
                    return Err(value(v, "rootbox leaves no padding after a partition; drop it, or set X-Rootbox-StartSector= on the next partition"));
                }
            }
            // The most padding: rootbox leaves none, which is within it.
            "PaddingMaxBytes" => drop((!empty).then(|| size(v)).transpose()?),
            "Format" => self.format = (!empty).then(|| At::new(line, v.to_owned())),
            "CopyFiles" => self.copy_file(v, line)?,
            "ExcludeFiles" => self.exclude.extend(
                v.split_whitespace()
                    .map(|p| {
                        let dir = p.ends_with('/');
                        absolute(&literal(p)?)
                            .map(|a| At::new(line, if dir { format!("{a}/") } else { a }))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            "CopyBlocks" => self.copy_blocks = self.blocks(v, line)?,
            "Subvolumes" => self.subvolumes(v, line)?,
            "MakeDirectories" if empty => self.make_dirs.clear(),
            "MakeDirectories" => {
                for p in v.split_whitespace() {
                    let p = absolute(&literal(p)?)?;
                    self.make_dirs.push(At::new(line, p));
                }
            }
            "DefaultSubvolume" => {
                self.default_subvolume = (!empty)
                    .then(|| absolute(&literal(v)?))
                    .transpose()?
                    .map(|x| At { value: x, line })
            }
            "Minimize" => {
                self.minimize = Some(match v {
                    "best" | "guess" => Minimize::On,
                    "off" => Minimize::Off,
                    other => match boolean(other) {
                        Ok(true) => Minimize::On,
                        Ok(false) => Minimize::Off,
                        Err(_) => return Err(value(v, "write off, best or guess")),
                    },
                })
            }
            _ => self.assign_more(a)?,
        }
        Ok(())
    }

    /// The keys of protection, flags and rootbox's extensions; the rest
    /// refused.
    fn assign_more(&mut self, a: &Assignment) -> Result<(), Problem> {
        let (v, line) = (a.value.as_str(), a.line);
        let empty = v.is_empty();
        match a.key.as_str() {
            "Verity" => self.verity = verity(v)?.map(|x| At { value: x, line }),
            "VerityMatchKey" => self.verity_key = (!empty).then(|| At::new(line, v.to_owned())),
            "Flags" => self.flags = Some(At::new(line, flags(v)?)),
            "NoAuto" => self.no_auto = Some(At::new(line, boolean(v)?)),
            "ReadOnly" => self.read_only = Some(At::new(line, boolean(v)?)),
            "GrowFileSystem" => self.grow = Some(At::new(line, boolean(v)?)),
            // Names a --split artifact; rootbox writes no split artifacts.
            "SplitName" => self.split_name = (!empty).then(|| At::new(line, v.to_owned())),
            "X-Rootbox-StartSector" => {
                let s = v.parse().map_err(|_| value(v, "not a sector number"))?;
                self.start_sector = Some(At::new(line, s));
            }
            "X-Rootbox-Owners" => self.owners = Some(At::new(line, PathBuf::from(literal(v)?))),
            "X-Rootbox-Closure" => self.closure = Some(At::new(line, PathBuf::from(literal(v)?))),
            "X-Rootbox-Registration" => {
                crate::layout::check_image_path(v).map_err(|_| {
                    value(
                        v,
                        "not an absolute path in the image such as /nix/nix-path-registration",
                    )
                })?;
                self.registration = Some(At::new(line, v.to_owned()));
            }
            "Encrypt" if matches!(boolean(v), Ok(false)) => {}
            key => {
                return Err(match REFUSED.iter().find(|(k, _)| *k == key) {
                    Some((_, why)) => Problem::Unsupported { why },
                    None => Problem::UnknownKey,
                })
            }
        }
        Ok(())
    }

    fn copy_file(&mut self, v: &str, line: usize) -> Result<(), Problem> {
        if v.is_empty() {
            self.copy_files.clear();
            return Ok(());
        }
        let v = literal(v)?;
        let mut it = v.split(':');
        let source = absolute(it.next().unwrap_or(""))?;
        let target = match it.next() {
            Some(t) => absolute(t)?,
            None => source.clone(),
        };
        if it.next().is_some() {
            return Err(value(
                &v,
                "rootbox reads CopyFiles=SOURCE[:TARGET]; drop the options after the second ':'",
            ));
        }
        self.copy_files.push(At {
            value: Copy { source, target },
            line,
        });
        Ok(())
    }

    fn blocks(&self, v: &str, line: usize) -> Result<Option<At<PathBuf>>, Problem> {
        match v {
            "" => Ok(None),
            "auto" => Err(value(v, "CopyBlocks=auto copies from the running system's partitions; give the image file's path")),
            p if p.starts_with('/') => Ok(Some(At {
                value: PathBuf::from(literal(p)?),
                line,
            })),
            _ => Err(value(v, "not an absolute path: start it with '/'")),
        }
    }

    fn subvolumes(&mut self, v: &str, line: usize) -> Result<(), Problem> {
        if v.is_empty() {
            self.subvolumes.clear();
        }
        for s in v.split_whitespace() {
            if s.contains(':') {
                return Err(value(s, "rootbox takes subvolume paths without options"));
            }
            self.subvolumes.push(At {
                value: absolute(&literal(s)?)?,
                line,
            });
        }
        Ok(())
    }
}

/// `Verity=`: None for off.
fn verity(v: &str) -> Result<Option<Verity>, Problem> {
    match v {
        "data" => Ok(Some(Verity::Data)),
        "hash" => Ok(Some(Verity::Hash)),
        "off" | "" => Ok(None),
        "signature" => Err(value(v, "rootbox makes no Verity signature partitions (they need --private-key/--certificate); drop this partition and pass the root hash on the kernel command line (roothash=/usrhash=)")),
        _ => Err(value(v, "write data, hash or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_repart_writes_them() {
        assert_eq!(size("96M"), Ok(96 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert!(size("1.5G").is_err());
        assert_eq!(flags("0x1000000000000000"), Ok(1 << 60));
        assert_eq!(flags("0b101"), Ok(5));
        assert_eq!(literal("a%%b"), Ok("a%b".into()));
        assert!(matches!(
            literal("%a"),
            Err(Problem::Specifier { spec: 'a', .. })
        ));
        assert_eq!(absolute("/usr/./lib/"), Ok("/usr/lib".into()));
        assert!(absolute("usr").is_err());
    }
}
