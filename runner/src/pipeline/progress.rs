//! Progress of the long phases, on a terminal and only there: the staging
//! copy (bytes of the planned total), mkfs (the image's allocated size
//! against the size estimate) and the verification (entries of the planned
//! total). Off when stderr is not a terminal, with `--quiet` (logging
//! below info) and with `--json`; `rootbox build` says which for the
//! staging step it starts through `ROOTBOX_PROGRESS`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::level_filters::LevelFilter;

const ENV: &str = "ROOTBOX_PROGRESS";

/// Allows progress for this build and the staging step it starts (which
/// inherits the environment), unless the report goes to stdout as JSON.
pub fn allow(json: bool) {
    std::env::set_var(ENV, if json { "0" } else { "1" });
}

fn enabled() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v == "1")
        && std::io::stderr().is_terminal()
        && LevelFilter::current() >= LevelFilter::INFO
}

/// A progress bar on stderr, or nothing when progress is off.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// `what`: a byte count out of `total`.
    pub fn bytes(what: &str, total: u64) -> Bar {
        Bar::new(what, total, "{bytes}/{total_bytes}")
    }

    /// `what`: a count of entries out of `total`.
    pub fn count(what: &str, total: u64) -> Bar {
        Bar::new(what, total, "{human_pos}/{human_len}")
    }

    fn new(what: &str, total: u64, counts: &str) -> Bar {
        if !enabled() || total == 0 {
            return Bar(None);
        }
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>9}} [{{bar:30}}] {counts} {{elapsed}}"
        ))
        .expect("a valid template")
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(what.to_string());
        bar.tick();
        Bar(Some(bar))
    }

    pub fn set(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_position(n);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Watches the allocated size of the file at `path` in a thread until
    /// [`Watch`] is dropped.
    pub fn watch_allocation(self, path: PathBuf) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = self.0.is_some().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                use std::os::unix::fs::MetadataExt;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::metadata(&path) {
                        self.set(m.blocks() * 512);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Watch { stop, thread }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// A thread updating a [`Bar`]; stopped (and the bar cleared) on drop.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
