//! closureInfo fixtures in tests/fixtures/closure. Their paths say
//! `@STORE@`; each test copies a fixture into a temporary directory,
//! substituting a temporary store that holds the listed paths.

use std::fs;
use std::path::{Path, PathBuf};

use rootbox_images::closure::{Closure, ClosureError, StorePathProblem};

const GLIBC: &str = "0c6vxl9g5z7r1i2x3k6a8wqsm3d7y2fh-glibc-2.40";
const HELLO: &str = "7pv4vzq2lnn5dj1w8d8yvklb7l6mkk7w-hello-2.12.1";
const LINK: &str = "x9f3k2m1d0c8b7a6z5y4w3v2u1t0s9r8-hello-link";

struct Env {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    root: PathBuf,
}

/// A temporary store with GLIBC (a directory), HELLO (a file) and LINK
/// (a dangling symlink), and the fixture `name` copied beside it.
fn env(name: &str) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    fs::create_dir_all(store.join(GLIBC).join("lib")).unwrap();
    fs::write(store.join(HELLO), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", store.join(LINK)).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/closure")
        .join(name);
    let root = tmp.path().join(name);
    let subst = |from: &Path, to: &Path| {
        let text = fs::read_to_string(from).unwrap();
        fs::write(to, text.replace("@STORE@", store.to_str().unwrap())).unwrap();
    };
    if src.is_dir() {
        fs::create_dir(&root).unwrap();
        for e in fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            subst(&e.path(), &root.join(e.file_name()));
        }
    } else {
        subst(&src, &root);
    }
    Env {
        _tmp: tmp,
        store,
        root,
    }
}

#[test]
fn closure_info_loads() {
    let env = env("ok");
    let c = Closure::load(&env.root, &env.store).unwrap();
    assert_eq!(
        c.paths,
        vec![
            env.store.join(GLIBC),
            env.store.join(HELLO),
            env.store.join(LINK)
        ]
    );
    assert_eq!(c.registration, Some(env.root.join("registration")));
    assert_eq!(c.total_nar_size, Some(31719544));
    assert_eq!(c.store_dir, env.store);
    assert!(!c.is_empty());
}

#[test]
fn plain_list_loads() {
    let env = env("plain-list");
    let c = Closure::load(&env.root, &env.store).unwrap();
    assert_eq!(c.paths, vec![env.store.join(HELLO), env.store.join(GLIBC)]);
    assert_eq!((c.registration, c.total_nar_size), (None, None));
}

#[test]
fn empty_list_is_an_empty_closure() {
    let env = env("plain-list");
    fs::write(&env.root, "\n\n").unwrap();
    let c = Closure::load(&env.root, &env.store).unwrap();
    assert!(c.is_empty());
}

#[test]
fn missing_store_path_names_line() {
    let env = env("plain-list");
    fs::remove_dir_all(env.store.join(GLIBC)).unwrap();
    let e = Closure::load(&env.root, &env.store).unwrap_err();
    match &e {
        ClosureError::Missing { line, path, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(path, &env.store.join(GLIBC));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("plain-list:3: "), "{e}");
    assert!(e.to_string().contains("nix-store --realise"), "{e}");
}

#[test]
fn file_inside_store_path_is_rejected() {
    let env = env("not-in-store");
    let e = Closure::load(&env.root, &env.store).unwrap_err();
    match &e {
        ClosureError::StorePaths { file, error } => {
            assert_eq!(file, &env.root.join("store-paths"));
            assert_eq!(error.line, 3);
            assert!(matches!(error.problem, StorePathProblem::NotInStore { .. }));
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("store-paths:3: \""), "{msg}");
    assert!(
        msg.contains("hello-2.12.1/bin/hello") && msg.contains("storeDir"),
        "{msg}"
    );
}

#[test]
fn wrong_store_dir_is_explained() {
    let env = env("ok");
    let e = Closure::load(&env.root, Path::new("/nix/store"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("store-paths:1: ") && e.contains("/nix/store/<hash>-<name>"),
        "{e}"
    );
    let e = Closure::load(&env.root, Path::new("nix/store"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("store directory nix/store:"), "{e}");
}

#[test]
fn registration_mismatch_lists_both_sides() {
    let env = env("mismatch");
    let e = Closure::load(&env.root, &env.store);
    // The extra path does not exist, so create it first to reach the registration check.
    assert!(
        matches!(e, Err(ClosureError::Missing { line: 4, .. })),
        "{e:?}"
    );
    fs::write(env.store.join("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-extra"), "").unwrap();
    let e = Closure::load(&env.root, &env.store).unwrap_err();
    match &e {
        ClosureError::Mismatch {
            not_registered,
            not_listed,
            ..
        } => {
            assert_eq!(
                not_registered,
                &vec![
                    env.store.join("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-extra"),
                    env.store.join(LINK)
                ]
            );
            assert!(not_listed.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("listed but not registered: ") && msg.contains("same closureInfo"),
        "{msg}"
    );
}

#[test]
fn malformed_registration_names_line() {
    let env = env("bad-registration");
    let e = Closure::load(&env.root, &env.store).unwrap_err();
    match &e {
        ClosureError::Registration { error, .. } => {
            assert_eq!(error.line, 11);
            assert!(
                error.message.contains("reference count"),
                "{}",
                error.message
            );
            assert!(error.message.contains("\"two\""), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .contains("registration:11: expected the reference count"),
        "{e}"
    );
}

#[test]
fn bad_total_nar_size() {
    let env = env("ok");
    fs::write(env.root.join("total-nar-size"), "lots\n").unwrap();
    let e = Closure::load(&env.root, &env.store)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("total-nar-size") && e.contains("\"lots\""),
        "{e}"
    );
}

#[test]
fn missing_closure_names_path() {
    let env = env("ok");
    let e = Closure::load(&env.root.join("nope"), &env.store)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    fs::remove_file(env.root.join("store-paths")).unwrap();
    let e = Closure::load(&env.root, &env.store)
        .unwrap_err()
        .to_string();
    assert!(e.contains("store-paths"), "{e}");
}
