//! What a test does when it cannot run its check here (no root, a tool or
//! a kernel feature missing): a skip.
//!
//! Under CI (the `CI` variable set and not empty, as `.ci/run` sets it) a
//! skip fails the test: CI installs every tool and runs as root, so a test
//! that cannot run its check there is a broken lane, not a pass.
//!
//! Outside CI the test returns as passed, and the skip is said where a
//! person sees it: libtest hides the stderr of a passing test, so the line
//! goes to the terminal (`/dev/tty`) when there is one, and to stderr
//! always (`--nocapture` shows it). It names the test (libtest names each
//! test's thread after it).
//!
//! This file is also the btrfs crate's (`btrfs/tests/common/mod.rs`
//! includes it by path): it uses nothing but std.

use std::io::Write;

/// Whether the tests run under CI: `CI` set and not empty.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A test cannot run (part of) its check here: under CI a panic naming
/// `reason`; else a line on the terminal and stderr. The caller returns
/// (or leaves out the part it cannot check).
#[track_caller]
pub fn skipped(reason: std::fmt::Arguments<'_>) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if under_ci() {
        panic!(
            "SKIPPED under CI: {reason}\n(CI is set: CI installs what the tests need and runs \
             as root, so a test that cannot run its check fails here)"
        );
    }
    say(&format!("SKIPPED {test}: {reason}"));
}

/// A line a person running the tests should see (libtest hides a passing
/// test's stderr): on the terminal when there is one, and on stderr. Not a
/// skip: for a branch another CI lane covers (e.g. a newer mkfs.btrfs).
pub fn note(text: std::fmt::Arguments<'_>) {
    let thread = std::thread::current();
    say(&format!(
        "NOTE {}: {text}",
        thread.name().unwrap_or("a test")
    ));
}

/// `line` on the terminal (when there is one) and on stderr.
fn say(line: &str) {
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        let _ = writeln!(tty, "{line}");
    }
    eprintln!("{line}");
}
