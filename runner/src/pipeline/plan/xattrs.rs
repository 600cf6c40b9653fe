//! A source's xattrs as the planner keeps them ([`read`]): ACLs translated
//! for the namespace (entries naming unmapped ids dropped, which makes the
//! entry unclean: it is recreated, not bound), everything else as it is;
//! and the one warning naming the xattrs that could not be read
//! ([`unreadable_warning`]).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::pipeline::ids::{keep_mapped, translate_acl, ACL_NAMES};

/// The xattrs a recreated entry gets.
pub(super) struct Kept {
    /// (name, value), in the order the source lists them.
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// False where an ACL named ids the namespace does not map, or was
    /// malformed: the source cannot be bound as it is.
    pub(super) clean: bool,
}

/// The xattrs of `src` as the namespace reads them, ACLs translated. What
/// was dropped is said in `warnings`; xattrs listed but unreadable are
/// added to `unreadable` as (path, name, error).
pub(super) fn read(
    src: &Path,
    warnings: &mut Vec<String>,
    unreadable: &mut Vec<(PathBuf, String, String)>,
) -> Kept {
    let mut clean = true;
    let mut xattrs = Vec::new();
    if let Ok(names) = xattr::list(src) {
        for name in names {
            let value = match xattr::get(src, &name) {
                Ok(Some(v)) => v,
                // Removed between list and get: nothing to keep.
                Ok(None) => continue,
                Err(e) => {
                    unreadable.push((
                        src.to_path_buf(),
                        name.to_string_lossy().into_owned(),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let key = name.as_bytes().to_vec();
            if ACL_NAMES.contains(&key.as_slice()) {
                // Ids that do not map read as 0xffffffff inside.
                match translate_acl(&value, keep_mapped, keep_mapped) {
                    Some((v, 0)) => xattrs.push((key, v)),
                    Some((v, n)) => {
                        clean = false;
                        warnings.push(format!(
                            "{}: dropped {n} ACL entr{} naming ids the namespace does not map \
                             (the booted kernel would reject them)",
                            src.display(),
                            if n == 1 { "y" } else { "ies" }
                        ));
                        xattrs.push((key, v));
                    }
                    None => {
                        clean = false;
                        warnings.push(format!("{}: malformed ACL dropped", src.display()));
                    }
                }
            } else {
                xattrs.push((key, value));
            }
        }
    }
    Kept { xattrs, clean }
}

/// One warning naming the files whose xattrs could not be read (at most
/// ten, then a count): those xattrs are not in the image.
pub(super) fn unreadable_warning(lost: &[(PathBuf, String, String)]) -> Option<String> {
    let (_, _, first_error) = lost.first()?;
    let mut files: Vec<&Path> = lost.iter().map(|(p, _, _)| p.as_path()).collect();
    files.dedup();
    let named: Vec<String> = lost
        .iter()
        .take(10)
        .map(|(p, n, _)| format!("{} ({n})", p.display()))
        .collect();
    let more = lost.len().saturating_sub(named.len());
    Some(format!(
        "xattrs of {} file{} could not be read and are not in the image ({first_error}; \
         Nix 2.34's build sandbox refuses getxattr): {}{}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        named.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_xattrs_are_named_in_one_warning() {
        assert_eq!(unreadable_warning(&[]), None);
        let lost: Vec<_> = (0..12)
            .map(|i| {
                (
                    PathBuf::from(format!("/src/f{}", i / 2)),
                    format!("user.x{i}"),
                    "Operation not supported (os error 95)".to_string(),
                )
            })
            .collect();
        let w = unreadable_warning(&lost).unwrap();
        assert!(w.starts_with("xattrs of 6 files could not be read"), "{w}");
        assert!(w.contains("Operation not supported (os error 95)"), "{w}");
        assert!(w.contains("/src/f0 (user.x0), /src/f0 (user.x1)"), "{w}");
        assert!(w.ends_with("/src/f4 (user.x9) and 2 more"), "{w}");
    }
}
