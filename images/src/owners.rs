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
//!
//! A pattern is compiled once ([`Pattern`]) and then matched against every
//! path of the tree without allocating.

use std::fmt;
use std::path::Path;

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRule {
    /// The image path pattern, normalized and compiled.
    pub pattern: Pattern,
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
                pattern: Pattern::new(&pattern),
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
            .find(|(_, r)| r.pattern.matches(image_path))
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

/// Whether `pattern` matches the image path `path`; compiles the pattern
/// each call: to match many paths, compile it once with [`Pattern::new`].
pub fn matches(pattern: &str, path: &str) -> bool {
    Pattern::new(pattern).matches(path)
}

/// A compiled path pattern: its components split once, each either a
/// literal name (compared as a string) or a glob of `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The pattern as given (normalized when it comes from a manifest).
    text: String,
    /// The components, a final `**` left out.
    parts: Vec<Part>,
    /// The pattern ended in `/**`: the directory itself and all below it.
    recursive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Glob(Vec<char>),
}

impl Pattern {
    /// Compiles `pattern`: empty components (`//`, a trailing `/`) are
    /// ignored; a last component that is exactly `**` matches zero or
    /// more components; `**` anywhere else is two `*` (one component).
    pub fn new(pattern: &str) -> Pattern {
        let mut parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let recursive = parts.last() == Some(&"**");
        if recursive {
            parts.pop();
        }
        let parts = parts
            .into_iter()
            .map(|c| {
                if c.contains(['*', '?']) {
                    Part::Glob(c.chars().collect())
                } else {
                    Part::Literal(c.to_owned())
                }
            })
            .collect();
        Pattern {
            text: pattern.to_owned(),
            parts,
            recursive,
        }
    }

    /// The pattern's text, as compiled.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the image path `path` matches (empty components of `path`
    /// are ignored too).
    pub fn matches(&self, path: &str) -> bool {
        let mut comps = path.split('/').filter(|c| !c.is_empty());
        for part in &self.parts {
            let hit = match (part, comps.next()) {
                (_, None) => false,
                (Part::Literal(l), Some(c)) => l == c,
                (Part::Glob(g), Some(c)) => glob(g, c),
            };
            if !hit {
                return false;
            }
        }
        self.recursive || comps.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*` and `?` within one path component; `?` is one character. `ni` and
/// `mark` are byte offsets into `name`, always on a character boundary.
fn glob(p: &[char], name: &str) -> bool {
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while let Some(c) = name[ni..].chars().next() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == c) {
            pi += 1;
            ni += c.len_utf8();
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            // mark < ni <= name.len(): a character follows it.
            mark += name[mark..].chars().next().map_or(1, char::len_utf8);
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

    /// The matcher before patterns were compiled (a Vec per call), kept as
    /// the reference the compiled form must agree with.
    fn reference(pattern: &str, path: &str) -> bool {
        fn glob(pattern: &str, name: &str) -> bool {
            let (p, n): (Vec<char>, Vec<char>) =
                (pattern.chars().collect(), name.chars().collect());
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
        let pat: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if pat.last() == Some(&"**") {
            let base = &pat[..pat.len() - 1];
            return comps.len() >= base.len() && base.iter().zip(&comps).all(|(p, c)| glob(p, c));
        }
        pat.len() == comps.len() && pat.iter().zip(&comps).all(|(p, c)| glob(p, c))
    }

    #[test]
    fn the_compiled_pattern_agrees_with_the_reference_on_every_pair() {
        let patterns = [
            "/",
            "",
            "/**",
            "/a",
            "/a/",
            "/a//b",
            "/a/**",
            "/a/**/",
            "/a/**/b",
            "/a/b**",
            "/a/*",
            "/a/*/",
            "/*",
            "/*/*",
            "/a/*.sock",
            "/a/?",
            "/a/??",
            "/a/*?*",
            "/a/**b",
            "/h\u{e9}me/*",
            "/h?me/al*e",
            "/x/*\u{e9}",
            "/x/?\u{e9}",
            "/x/a*b*c",
            "/x/*a",
            "/home/*/.ssh/authorized_keys",
            "/srv/*.sock/**",
        ];
        let paths = [
            "/",
            "",
            "/a",
            "/a/",
            "//a",
            "/ab",
            "/a/b",
            "/a/b/",
            "/a/b/c",
            "/a/bb",
            "/a/xb",
            "/a/x.sock",
            "/a/.sock",
            "/a/b**",
            "/a/**",
            "/a/**/b",
            "/h\u{e9}me/x",
            "/h\u{e9}me/alice",
            "/home/alice",
            "/x/\u{e9}",
            "/x/a\u{e9}",
            "/x/\u{e9}\u{e9}",
            "/x/aXbYc",
            "/x/abc",
            "/x/acb",
            "/x/aaa",
            "/x/ba",
            "/home/alice/.ssh/authorized_keys",
            "/home/.ssh/authorized_keys",
            "/srv/a.sock",
            "/srv/a.sock/x/y",
        ];
        let mut wrong = Vec::new();
        for pat in patterns {
            let compiled = Pattern::new(pat);
            for path in paths {
                let (want, got) = (reference(pat, path), compiled.matches(path));
                if want != got {
                    wrong.push(format!("{pat:?} on {path:?}: {got}, want {want}"));
                }
                assert_eq!(matches(pat, path), got, "{pat:?} on {path:?}");
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_compiled_pattern_on_double_stars_trailing_slashes_and_characters() {
        // A final `**` is the directory and everything below, not a sibling.
        assert!(Pattern::new("/a/**").matches("/a"));
        assert!(Pattern::new("/a/**").matches("/a/b/c/"));
        assert!(!Pattern::new("/a/**").matches("/ab/c"));
        // `**` elsewhere, or glued to a name, is a glob of one component.
        assert!(Pattern::new("/a/**/b").matches("/a/x/b"));
        assert!(!Pattern::new("/a/**/b").matches("/a/x/y/b"));
        assert!(Pattern::new("/a/b**").matches("/a/bcd"));
        assert!(!Pattern::new("/a/b**").matches("/a/b/c"));
        // A trailing `/` on either side changes nothing.
        assert!(Pattern::new("/a/b/").matches("/a/b"));
        assert!(Pattern::new("/a/b").matches("/a/b/"));
        assert!(!Pattern::new("/a/b/").matches("/a/b/c"));
        // `?` is one character, not one byte.
        assert!(Pattern::new("/h?me").matches("/h\u{e9}me"));
        assert!(!Pattern::new("/h??me").matches("/h\u{e9}me"));
        assert!(Pattern::new("/x/*\u{e9}").matches("/x/\u{e9}\u{e9}"));
        // The text is kept for messages.
        let m = Manifest::parse("/home//alice/** 1 1\n", "m").unwrap();
        assert_eq!(m.rules[0].pattern.to_string(), "/home/alice/**");
        assert_eq!(m.rules[0].pattern.as_str(), "/home/alice/**");
    }
}
