//! How an error reads on the terminal and in the staging step's result.

/// The error and its causes, joined by ": " (anyhow's `{:#}`), but without
/// a cause whose text is already there: the library crates' error types
/// print their source in their own message, and `.context()` keeps them
/// as typed causes, so `{:#}` would say it twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// As thiserror makes them: the source in the message, and as `source()`.
    #[derive(Debug)]
    struct Typed {
        source: std::io::Error,
    }

    impl std::fmt::Display for Typed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading the image: {}", self.source)
        }
    }

    impl std::error::Error for Typed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn causes_already_in_the_message_are_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Err::<(), _>(Typed { source: io })
            .context("checking the output")
            .unwrap_err();
        assert_eq!(
            error_text(&e),
            "checking the output: reading the image: No such file or directory (os error 2)"
        );
        let plain = Err::<(), _>(std::io::Error::from_raw_os_error(libc::EACCES))
            .context("opening x")
            .unwrap_err();
        assert_eq!(error_text(&plain), format!("{plain:#}"));
    }
}
