//! The harness shared by the integration tests (tests/build/, tests/hostile/,
//! tests/faults.rs, tests/tarball.rs, tests/run.rs).
//!
//! rootbox is a rootless tool, so its tests must run without privileges.
//! CI runs them as root; every test then drops to an unprivileged user
//! first ([`setup`], [`cmd_as`]) and checks that the drop happened
//! ([`assert_unprivileged`]). Run as a normal user, the tests use that user.
//!
//! - [`user`]: who the tests run as, its subordinate ids;
//! - [`cmd`]: running commands (and the rootbox binary) with a time limit
//!   and readable failures, processes by their arguments;
//! - [`fixture`]: files and directories owned by the test user, [`Fx`]
//!   (the directories of one build);
//! - [`mounts`]: the mount table, mounts made by tests and undone on drop;
//! - [`image`]: images read back with `rootbox inspect --json`, `btrfs check`;
//! - [`snapshot`]: a source tree recorded before and after a build;
//! - [`skip`]: a test that cannot run its check here ([`skip!`]): fails
//!   under CI, else says so on the terminal.
//!
//! Everything is re-exported here: a test crate says `use common::*;`.

// Each test crate uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod cmd;
pub mod fixture;
pub mod image;
pub mod mounts;
pub mod skip;
pub mod snapshot;
pub mod user;

pub use cmd::*;
pub use fixture::*;
pub use image::*;
pub use mounts::*;
pub use skip::*;
pub use snapshot::*;
pub use user::*;

/// A test that cannot run its check here returns from it: under CI it
/// fails instead, naming the reason ([`skip::skipped`]).
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::common::skip::skipped(format_args!($($arg)*));
        return;
    }};
}
