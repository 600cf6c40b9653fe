//! Image paths: a path inside the image (a mount point, the store
//! directory), which a spec, a layout and a closure all take absolute and
//! normalized ([`check_image_path`]). [`crate::layout`] re-exports them,
//! their public path.

/// An image path (a path inside the image, like `/nix/store`) that is not
/// absolute and normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImagePathError {
    /// The path is empty.
    #[error("empty path; expected an absolute path such as /nix")]
    Empty,
    /// The path does not start with `/`.
    #[error("{0:?} is not absolute; write it from the image's root, e.g. \"/{0}\"")]
    Relative(String),
    /// The path contains a NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    /// The path has `..` that climbs above `/`.
    #[error("{0:?} climbs above / with \"..\"")]
    EscapesRoot(String),
    /// The path has `//`, `.`, `..` or a trailing `/`.
    #[error("{path:?} is not normalized; write {suggestion:?}")]
    NotNormalized {
        /// The path as given.
        path: String,
        /// Its normalized form.
        suggestion: String,
    },
}

/// Returns the normalized form of an absolute image path: no `//`, `.`,
/// `..` or trailing `/` (except for `/` itself). `..` is resolved lexically.
pub fn normalize_image_path(path: &str) -> Result<String, ImagePathError> {
    if path.is_empty() {
        return Err(ImagePathError::Empty);
    }
    if path.contains('\0') {
        return Err(ImagePathError::Nul(path.into()));
    }
    if !path.starts_with('/') {
        return Err(ImagePathError::Relative(path.into()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ImagePathError::EscapesRoot(path.into()));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Checks that `path` is an absolute, normalized image path; the error
/// suggests the normalized form.
pub fn check_image_path(path: &str) -> Result<(), ImagePathError> {
    let normal = normalize_image_path(path)?;
    if normal == path {
        Ok(())
    } else {
        Err(ImagePathError::NotNormalized {
            path: path.into(),
            suggestion: normal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_image_path("/").unwrap(), "/");
        assert_eq!(normalize_image_path("//").unwrap(), "/");
        assert_eq!(normalize_image_path("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalize_image_path("/a/../b").unwrap(), "/b");
        assert_eq!(
            normalize_image_path("/.."),
            Err(ImagePathError::EscapesRoot("/..".into()))
        );
        assert_eq!(normalize_image_path(""), Err(ImagePathError::Empty));
        assert!(matches!(
            normalize_image_path("nix"),
            Err(ImagePathError::Relative(_))
        ));
        assert!(check_image_path("/nix/store").is_ok());
        assert!(check_image_path("/").is_ok());
        for (bad, sugg) in [
            ("//", "/"),
            ("/a/", "/a"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a//b", "/a/b"),
        ] {
            let e = check_image_path(bad).unwrap_err();
            assert_eq!(
                e,
                ImagePathError::NotNormalized {
                    path: bad.into(),
                    suggestion: sugg.into()
                }
            );
            assert!(e.to_string().contains(&format!("write {sugg:?}")), "{e}");
        }
        let e = check_image_path("nix").unwrap_err().to_string();
        assert!(e.contains("\"/nix\""), "{e}");
    }
}
