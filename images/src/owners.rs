//! Ownership manifests: who owns what in the image, whatever the build
//! user's id map could express.
//!
//! One rule a line, `PATH UID GID [MODE]`:
//!
//! ```text
//! # path                 uid  gid  mode
//! /home/alice/**         1000 100
//! /home/alice            1000 100  0700
//! /var/log/journal       0    101  2755
//! /srv/*.sock            33   33
//! ```
//!
//! `PATH` is an absolute image path. A component may hold `*` (any run of
//! characters but `/`) and `?` (one character); a final `/**` matches the
//! directory itself and everything below it. When several rules match a
//! path, the last one wins, so general rules go first. `MODE` is octal
//! permission bits (set-id and sticky included); without it the mode is
//! kept. Blank lines and lines starting with `#` are ignored. Every rule
//! must match at least one path of the image.

use std::path::Path;

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRule {
    /// The image path pattern, normalized.
    pub pattern: String,
    /// Owner to set.
    pub uid: u32,
    /// Group to set.
    pub gid: u32,
    /// Permission bits to set (`0o7777` at most), or keep.
    pub mode: Option<u32>,
    /// 1-based line number in the manifest.
    pub line: usize,
}

/// A parsed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The rules, in file order.
    pub rules: Vec<OwnerRule>,
}

/// A manifest line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct ManifestError {
    /// The manifest file, as named to the user.
    pub origin: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, and how to write it.
    pub message: String,
}

impl Manifest {
    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            origin: origin.clone(),
            line: 0,
            message: format!("cannot read the ownership manifest: {e}"),
        })?;
        Manifest::parse(&text, &origin)
    }

    /// Parses manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| ManifestError {
                origin: origin.to_string(),
                line,
                message,
            };
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            if !(3..=4).contains(&fields.len()) {
                return Err(err(format!(
                    "expected `PATH UID GID [MODE]`, e.g. `/home/alice/** 1000 100`, found {} field(s)",
                    fields.len()
                )));
            }
            let pattern = normalize_pattern(fields[0]).map_err(err)?;
            let id = |what: &str, s: &str| {
                s.parse::<u32>().ok().filter(|&n| n != u32::MAX).ok_or_else(|| {
                    ManifestError {
                        origin: origin.to_string(),
                        line,
                        message: format!("{what} {s:?} is not a number below 4294967295 (names are not looked up: write the numeric id)"),
                    }
                })
            };
            let uid = id("uid", fields[1])?;
            let gid = id("gid", fields[2])?;
            let mode = match fields.get(3) {
                None => None,
                Some(m) => Some(
                    u32::from_str_radix(m.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|&v| v <= 0o7777)
                        .ok_or_else(|| {
                            err(format!(
                                "mode {m:?} is not octal permission bits such as 0755 or 2750"
                            ))
                        })?,
                ),
            };
            rules.push(OwnerRule {
                pattern,
                uid,
                gid,
                mode,
                line,
            });
        }
        Ok(Manifest { rules })
    }

    /// The rule that decides `image_path` (the last matching one), with its index.
    pub fn lookup(&self, image_path: &str) -> Option<(usize, &OwnerRule)> {
        self.rules
            .iter()
            .enumerate()
            .rev()
            .find(|(_, r)| matches(&r.pattern, image_path))
    }
}

fn normalize_pattern(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "path {p:?} must be absolute (an image path such as /home/alice)"
        ));
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in parts.iter().enumerate() {
        if *c == "." || *c == ".." {
            return Err(format!("path {p:?} must not contain `.` or `..`"));
        }
        if c.contains("**") && (*c != "**" || i + 1 != parts.len()) {
            return Err(format!(
                "path {p:?}: `**` is only allowed as the last component (`/dir/**`)"
            ));
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether `pattern` (normalized) matches the image path `path`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if pat.last() == Some(&"**") {
        let base = &pat[..pat.len() - 1];
        return comps.len() >= base.len() && base.iter().zip(&comps).all(|(p, c)| glob(p, c));
    }
    pat.len() == comps.len() && pat.iter().zip(&comps).all(|(p, c)| glob(p, c))
}

/// `*` and `?` within one path component.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_the_last_match_wins() {
        let m = Manifest::parse(
            "# owners\n/home/alice/** 1000 100\n\n/home/alice 1000 100 0700\n/var/log/journal 0 101 2755\n",
            "owners.txt",
        )
        .unwrap();
        assert_eq!(m.rules.len(), 3);
        assert_eq!(m.lookup("/home/alice").unwrap().1.mode, Some(0o700));
        assert_eq!(
            m.lookup("/home/alice/.ssh/authorized_keys").unwrap().1.line,
            2
        );
        assert_eq!(m.lookup("/var/log/journal").unwrap().1.mode, Some(0o2755));
        assert!(m.lookup("/home/bob").is_none());
        assert!(m.lookup("/var/log").is_none());
    }

    #[test]
    fn globs_stay_within_components() {
        assert!(matches("/srv/*.sock", "/srv/a.sock"));
        assert!(!matches("/srv/*.sock", "/srv/x/a.sock"));
        assert!(matches("/home/*/.ssh", "/home/alice/.ssh"));
        assert!(matches("/a/**", "/a"));
        assert!(matches("/a/**", "/a/b/c"));
        assert!(!matches("/a/**", "/ab"));
        assert!(matches("/**", "/anything/at/all"));
        assert!(matches("/f?o", "/foo"));
        assert!(!matches("/f?o", "/fooo"));
    }

    #[test]
    fn bad_lines_name_the_line_and_the_fix() {
        let e = Manifest::parse("/ok 0 0\nrelative 0 0\n", "m").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("absolute"), "{e}");
        let e = Manifest::parse("/x alice 100\n", "m").unwrap_err();
        assert!(e.message.contains("numeric"), "{e}");
        let e = Manifest::parse("/x 1 1 999\n", "m").unwrap_err();
        assert!(e.message.contains("octal"), "{e}");
        let e = Manifest::parse("/x 1\n", "m").unwrap_err();
        assert!(e.message.contains("PATH UID GID"), "{e}");
        let e = Manifest::parse("/a/**/b 1 1\n", "m").unwrap_err();
        assert!(e.message.contains("last component"), "{e}");
        let e = Manifest::parse("/a/../b 1 1\n", "m").unwrap_err();
        assert!(e.message.contains(".."), "{e}");
    }
}
