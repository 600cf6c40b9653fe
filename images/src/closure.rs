//! Nix store closures: which store paths go into the image, and their
//! registration for `nix-store --load-db`.
//!
//! A closure is given either as a nixpkgs `closureInfo` output directory
//! (files `store-paths`, `registration` and optionally `total-nar-size`)
//! or as a plain file listing store paths, one per line.
//!
//! The text parsers ([`parse_store_paths`], [`parse_registration`]) touch
//! no files, so they can be tested and fuzzed alone; [`Closure::load`]
//! adds the file-system checks.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// A closure ready to be copied into an image.
///
/// An empty closure is valid and returned as such; the runner should warn
/// about it, since an image without its store is rarely what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The store directory the paths live in, e.g. `/nix/store`.
    pub store_dir: PathBuf,
    /// The store paths, in the order listed, each a direct child of
    /// `store_dir` that exists on this machine.
    pub paths: Vec<PathBuf>,
    /// The `registration` file of a `closureInfo` directory, already
    /// checked to register exactly `paths`.
    pub registration: Option<PathBuf>,
    /// The `total-nar-size` of a `closureInfo` directory, in bytes.
    pub total_nar_size: Option<u64>,
}

/// What is wrong with one line of a store-paths list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePathProblem {
    /// The line is not an absolute path.
    NotAbsolute,
    /// The path has `//`, `.`, `..` or a trailing `/`.
    NotNormalized,
    /// The path is not `<store_dir>/<name>`.
    NotInStore {
        /// The store directory expected.
        store_dir: String,
    },
    /// The path was already listed.
    Duplicate {
        /// The line it was first listed on.
        first_line: usize,
    },
}

impl fmt::Display for StorePathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorePathProblem::NotAbsolute => {
                f.write_str("not an absolute path; each line must be one store path such as /nix/store/<hash>-<name>")
            }
            StorePathProblem::NotNormalized => {
                f.write_str("not a normalized path (no //, ., .. or trailing /); write the store path as Nix prints it")
            }
            StorePathProblem::NotInStore { store_dir } => write!(
                f,
                "not a store path: each line must be {store_dir}/<hash>-<name> (a store path, not a file inside one); if the store lives elsewhere, set storeDir"
            ),
            StorePathProblem::Duplicate { first_line } => {
                write!(f, "listed twice (first on line {first_line}); remove the duplicate")
            }
        }
    }
}

/// A line of a store-paths list that is not a valid store path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {path:?}: {problem}")]
pub struct StorePathsError {
    /// 1-based line number.
    pub line: usize,
    /// The line's text (trimmed).
    pub path: String,
    /// What is wrong.
    pub problem: StorePathProblem,
}

/// A malformed registration (`nix-store --dump-db` format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RegistrationError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected there.
    pub message: String,
}

/// One record of a registration: a store path and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    /// The store path.
    pub path: PathBuf,
    /// Its NAR hash, e.g. `sha256:…`.
    pub nar_hash: String,
    /// Its NAR size in bytes.
    pub nar_size: u64,
    /// The derivation that built it, if recorded.
    pub deriver: Option<PathBuf>,
    /// The store paths it references.
    pub references: Vec<PathBuf>,
}

/// A closure that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store directory itself is not usable.
    #[error("store directory {}: {message}", store_dir.display())]
    StoreDir {
        /// The store directory.
        store_dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A line of the store-paths list is invalid.
    #[error("{}:{}: {:?}: {}", file.display(), error.line, error.path, error.problem)]
    StorePaths {
        /// The store-paths file.
        file: PathBuf,
        /// The bad line.
        error: StorePathsError,
    },
    /// A listed store path does not exist here.
    #[error("{}:{line}: {} does not exist; realise the closure on this machine first (nix-store --realise) or check storeDir", file.display(), path.display())]
    Missing {
        /// The store-paths file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The missing store path.
        path: PathBuf,
    },
    /// The registration file is malformed.
    #[error("{}:{}: {}", file.display(), error.line, error.message)]
    Registration {
        /// The registration file.
        file: PathBuf,
        /// Where and what.
        error: RegistrationError,
    },
    /// The registration does not register exactly the listed store paths.
    #[error("{} does not match {}:{}{}; use the store-paths and registration of the same closureInfo", registration.display(), store_paths.display(), list_diff("listed but not registered", not_registered), list_diff("registered but not listed", not_listed))]
    Mismatch {
        /// The registration file.
        registration: PathBuf,
        /// The store-paths file.
        store_paths: PathBuf,
        /// Up to 5 paths in store-paths that are not registered.
        not_registered: Vec<PathBuf>,
        /// Up to 5 registered paths missing from store-paths.
        not_listed: Vec<PathBuf>,
    },
    /// `total-nar-size` is not a number.
    #[error("{}: expected a number of bytes, found {text:?}", file.display())]
    TotalNarSize {
        /// The total-nar-size file.
        file: PathBuf,
        /// Its content.
        text: String,
    },
}

fn list_diff(what: &str, paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!(" {what}: {}", list.join(", "))
}

/// Parses a list of store paths, one per line; blank lines are ignored and
/// surrounding whitespace is trimmed. Every path must be `<store_dir>/<name>`
/// and listed once. Touches no files.
pub fn parse_store_paths(text: &str, store_dir: &Path) -> Result<Vec<PathBuf>, StorePathsError> {
    Ok(parse_store_path_lines(text, store_dir)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Like [`parse_store_paths`], keeping each path's line number.
fn parse_store_path_lines(
    text: &str,
    store_dir: &Path,
) -> Result<Vec<(usize, PathBuf)>, StorePathsError> {
    let store = store_dir.to_string_lossy();
    let store = store.trim_end_matches('/');
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let path = raw.trim();
        if path.is_empty() {
            continue;
        }
        let fail = |problem| StorePathsError {
            line,
            path: path.to_owned(),
            problem,
        };
        match crate::layout::check_image_path(path) {
            Ok(()) => {}
            Err(crate::layout::ImagePathError::Relative(_)) => {
                return Err(fail(StorePathProblem::NotAbsolute))
            }
            Err(_) => return Err(fail(StorePathProblem::NotNormalized)),
        }
        let name = path
            .strip_prefix(store)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|n| !n.is_empty() && !n.contains('/'));
        if name.is_none() {
            return Err(fail(StorePathProblem::NotInStore {
                store_dir: store.to_owned(),
            }));
        }
        if let Some(&first_line) = seen.get(path) {
            return Err(fail(StorePathProblem::Duplicate { first_line }));
        }
        seen.insert(path, line);
        out.push((line, PathBuf::from(path)));
    }
    Ok(out)
}

/// Parses a registration in the `nix-store --dump-db` format that
/// `closureInfo` writes: for each path, the lines
/// path, NAR hash, NAR size, deriver (may be empty), reference count N,
/// then N reference paths. Touches no files.
pub fn parse_registration(text: &str) -> Result<Vec<RegistrationRecord>, RegistrationError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
    let mut records = Vec::new();
    let last_line = text.lines().count();
    while let Some((line, path)) = lines.next() {
        if path.is_empty() && lines.peek().is_none() {
            break;
        }
        let err = |line, message: String| RegistrationError { line, message };
        if !path.starts_with('/') {
            return Err(err(line, format!("expected a store path, found {path:?}")));
        }
        let mut field = |what: &str| {
            lines.next().ok_or_else(|| {
                err(
                    last_line + 1,
                    format!("the file ends inside the record of {path}: expected its {what}"),
                )
            })
        };
        let (l, nar_hash) = field("NAR hash")?;
        if nar_hash.is_empty() {
            return Err(err(l, format!("empty NAR hash for {path}")));
        }
        let (l, size) = field("NAR size")?;
        let nar_size = size.parse().map_err(|_| {
            err(
                l,
                format!("expected the NAR size of {path}, found {size:?}"),
            )
        })?;
        let (_, deriver) = field("deriver (or an empty line)")?;
        let (l, count) = field("reference count")?;
        let count: usize = count.parse().map_err(|_| {
            err(
                l,
                format!("expected the reference count of {path}, found {count:?}"),
            )
        })?;
        let mut references = Vec::with_capacity(count.min(4096));
        for n in 0..count {
            let (l, r) = field(&format!("reference {} of {count}", n + 1))?;
            if !r.starts_with('/') {
                return Err(err(
                    l,
                    format!("expected reference {} of {path}, found {r:?}", n + 1),
                ));
            }
            references.push(PathBuf::from(r));
        }
        records.push(RegistrationRecord {
            path: PathBuf::from(path),
            nar_hash: nar_hash.to_owned(),
            nar_size,
            deriver: (!deriver.is_empty()).then(|| PathBuf::from(deriver)),
            references,
        });
    }
    Ok(records)
}

/// Compares the registered paths with the listed ones; returns up to 5
/// of each kind of difference, or `None` when the sets are equal.
fn registration_diff(
    listed: &[PathBuf],
    records: &[RegistrationRecord],
) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let listed: BTreeSet<&PathBuf> = listed.iter().collect();
    let registered: BTreeSet<&PathBuf> = records.iter().map(|r| &r.path).collect();
    let take = |a: &BTreeSet<&PathBuf>, b: &BTreeSet<&PathBuf>| -> Vec<PathBuf> {
        a.difference(b).take(5).map(|p| (*p).clone()).collect()
    };
    let not_registered = take(&listed, &registered);
    let not_listed = take(&registered, &listed);
    (!not_registered.is_empty() || !not_listed.is_empty()).then_some((not_registered, not_listed))
}

fn read(path: &Path) -> Result<String, ClosureError> {
    std::fs::read_to_string(path).map_err(|source| ClosureError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Closure {
    /// Loads a closure from a `closureInfo` directory or a store-paths
    /// file, and checks it: every path is a direct child of `store_dir`,
    /// listed once and present on this machine (a file, directory or
    /// symlink); a `registration` registers exactly the listed paths.
    pub fn load(path: &Path, store_dir: &Path) -> Result<Closure, ClosureError> {
        let store_err = |message: &str| ClosureError::StoreDir {
            store_dir: store_dir.to_owned(),
            message: message.to_owned(),
        };
        let store_str = store_dir
            .to_str()
            .ok_or_else(|| store_err("is not valid UTF-8"))?;
        crate::layout::check_image_path(store_str).map_err(|e| store_err(&e.to_string()))?;
        if store_str == "/" {
            return Err(store_err("cannot be /"));
        }
        let meta = std::fs::metadata(path).map_err(|source| ClosureError::Io {
            path: path.to_owned(),
            source,
        })?;
        let (list_file, reg_file, nar_file) = if meta.is_dir() {
            (
                path.join("store-paths"),
                Some(path.join("registration")).filter(|p| p.exists()),
                Some(path.join("total-nar-size")).filter(|p| p.exists()),
            )
        } else {
            (path.to_owned(), None, None)
        };
        let lines = parse_store_path_lines(&read(&list_file)?, store_dir).map_err(|error| {
            ClosureError::StorePaths {
                file: list_file.clone(),
                error,
            }
        })?;
        if let Some((line, p)) = lines.iter().find(|(_, p)| p.symlink_metadata().is_err()) {
            return Err(ClosureError::Missing {
                file: list_file.clone(),
                line: *line,
                path: p.clone(),
            });
        }
        let paths: Vec<PathBuf> = lines.into_iter().map(|(_, p)| p).collect();
        if let Some(reg) = &reg_file {
            let records =
                parse_registration(&read(reg)?).map_err(|error| ClosureError::Registration {
                    file: reg.clone(),
                    error,
                })?;
            if let Some((not_registered, not_listed)) = registration_diff(&paths, &records) {
                return Err(ClosureError::Mismatch {
                    registration: reg.clone(),
                    store_paths: list_file,
                    not_registered,
                    not_listed,
                });
            }
        }
        let total_nar_size = match nar_file {
            None => None,
            Some(f) => {
                let text = read(&f)?;
                Some(
                    text.trim()
                        .parse()
                        .map_err(|_| ClosureError::TotalNarSize {
                            file: f,
                            text: text.trim().to_owned(),
                        })?,
                )
            }
        };
        Ok(Closure {
            store_dir: store_dir.to_owned(),
            paths,
            registration: reg_file,
            total_nar_size,
        })
    }

    /// Whether the closure has no store paths.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "/nix/store";

    fn sp(text: &str) -> Result<Vec<PathBuf>, StorePathsError> {
        parse_store_paths(text, Path::new(STORE))
    }

    #[test]
    fn store_paths_ok() {
        let got = sp("/nix/store/aaa-hello\n\n  /nix/store/bbb-glibc  \r\n").unwrap();
        assert_eq!(
            got,
            vec![
                PathBuf::from("/nix/store/aaa-hello"),
                PathBuf::from("/nix/store/bbb-glibc")
            ]
        );
        assert!(sp("").unwrap().is_empty());
        let other = parse_store_paths("/gnu/store/x-y\n", Path::new("/gnu/store/")).unwrap();
        assert_eq!(other, vec![PathBuf::from("/gnu/store/x-y")]);
    }

    #[test]
    fn store_path_errors() {
        for (text, line, problem) in [
            ("nix/store/a", 1, StorePathProblem::NotAbsolute),
            (
                "/nix/store/a\n/nix/store//b",
                2,
                StorePathProblem::NotNormalized,
            ),
            ("/nix/store/a/", 1, StorePathProblem::NotNormalized),
            (
                "/nix/store/a/bin/sh",
                1,
                StorePathProblem::NotInStore {
                    store_dir: STORE.into(),
                },
            ),
            (
                "/nix/store",
                1,
                StorePathProblem::NotInStore {
                    store_dir: STORE.into(),
                },
            ),
            (
                "/nix/storefoo",
                1,
                StorePathProblem::NotInStore {
                    store_dir: STORE.into(),
                },
            ),
            (
                "/nix/store/a\n\n/nix/store/a",
                3,
                StorePathProblem::Duplicate { first_line: 1 },
            ),
        ] {
            let e = sp(text).unwrap_err();
            assert_eq!((e.line, &e.problem), (line, &problem), "{text:?}");
        }
        let msg = sp("/nix/store/a/bin").unwrap_err().to_string();
        assert!(
            msg.starts_with("line 1: \"/nix/store/a/bin\": ") && msg.contains("storeDir"),
            "{msg}"
        );
    }

    const REG: &str = "/nix/store/aaa-hello\nsha256:0abc\n1024\n/nix/store/ddd-hello.drv\n2\n/nix/store/aaa-hello\n/nix/store/bbb-glibc\n/nix/store/bbb-glibc\nsha256:1def\n2048\n\n0\n";

    #[test]
    fn registration_parses() {
        let recs = parse_registration(REG).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].nar_size, 1024);
        assert_eq!(
            recs[0].deriver.as_deref(),
            Some(Path::new("/nix/store/ddd-hello.drv"))
        );
        assert_eq!(recs[0].references.len(), 2);
        assert_eq!(recs[1].deriver, None);
        assert!(recs[1].references.is_empty());
        assert!(parse_registration("").unwrap().is_empty());
    }

    #[test]
    fn registration_errors_name_line() {
        let truncated = &REG[..REG.find("/nix/store/bbb-glibc\n/nix").unwrap()];
        let e = parse_registration(truncated).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("reference 2 of 2"), "{e}");
        let e = parse_registration("/nix/store/a\nsha256:x\nbig\n\n0\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("NAR size"));
        let e = parse_registration("/nix/store/a\nsha256:x\n1\n\nmany\n").unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.contains("reference count"), "{e}");
        let e = parse_registration("hello\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_registration("/nix/store/a\n").unwrap_err();
        assert!(e.message.contains("NAR hash"), "{e}");
    }

    #[test]
    fn diff_reports_both_ways() {
        let recs = parse_registration(REG).unwrap();
        let listed = vec![
            PathBuf::from("/nix/store/aaa-hello"),
            PathBuf::from("/nix/store/ccc-extra"),
        ];
        let (nr, nl) = registration_diff(&listed, &recs).unwrap();
        assert_eq!(nr, vec![PathBuf::from("/nix/store/ccc-extra")]);
        assert_eq!(nl, vec![PathBuf::from("/nix/store/bbb-glibc")]);
        let many: Vec<PathBuf> = (0..9)
            .map(|i| PathBuf::from(format!("/nix/store/{i}-x")))
            .collect();
        let (nr, _) = registration_diff(&many, &[]).unwrap();
        assert_eq!(nr.len(), 5);
        let all = vec![
            PathBuf::from("/nix/store/bbb-glibc"),
            PathBuf::from("/nix/store/aaa-hello"),
        ];
        assert!(registration_diff(&all, &recs).is_none());
    }
}
