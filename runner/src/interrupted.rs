//! A build stopped by a signal: what both pipelines (`pipeline` and
//! `disk`) return so that `main` exits as a shell would.

/// A build stopped by a signal (SIGINT, SIGTERM, SIGHUP).
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(s) => write!(f, "interrupted by {s}"),
            Err(_) => write!(f, "interrupted by signal {}", self.0),
        }
    }
}

impl std::error::Error for Interrupted {}
