//! Hostile closures: store paths and closureInfo files.

use super::*;

// ---- closures ------------------------------------------------------------------------

fn closure_args(fx: &Fx, ci: &Path) -> Vec<OsString> {
    let mut a = std_args(fx);
    a.extend(args(&["--closure", s(ci), "--store-dir", s(&fx.store())]));
    a
}

fn closure_cases() -> Vec<Case> {
    vec![
        fails(
            "a store path that does not exist",
            &[
                "store-paths:2:",
                "-gone does not exist",
                "realise the closure",
            ],
            |fx| {
                let p = fx.store_path("hello");
                let gone = fx.store().join(format!("{HASH}-gone"));
                let ci = fx.closure(&[s(&p).into(), s(&gone).into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a path outside the store",
            &["store-paths:1:", "not a store path", "storeDir"],
            |fx| {
                fx.store_path("hello");
                let ci = fx.closure(&["/etc".into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a file inside a store path",
            &["store-paths:1:", "not a file inside one"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p.join("bin/hello")).into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a store path listed twice",
            &["store-paths:3:", "listed twice (first on line 1)"],
            |fx| {
                let p = fx.store_path("hello");
                let q = fx.store_path("world");
                let ci = fx.closure(&[s(&p).into(), s(&q).into(), s(&p).into()], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a store path not normalized",
            &["store-paths:1:", "not a normalized path"],
            |fx| {
                let p = fx.store_path("hello");
                let odd = format!("{}/./{HASH}-hello", s(&fx.store()));
                let _ = p;
                let ci = fx.closure(&[odd], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a relative store path",
            &["store-paths:1:", "not an absolute path"],
            |fx| {
                fx.store_path("hello");
                let ci = fx.closure(&[format!("{HASH}-hello")], None);
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a registration that does not match store-paths",
            &[
                "does not match",
                "registered but not listed",
                "-world",
                "same closureInfo",
            ],
            |fx| {
                let p = fx.store_path("hello");
                let q = fx.store_path("world");
                let ci = fx.closure(&[s(&p).into()], Some(&[s(&p).into(), s(&q).into()]));
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a truncated registration",
            &["registration:", "ends inside the record", "reference count"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                write_as(
                    &fx.user,
                    &ci.join("registration"),
                    format!("{}\nsha256:00\n12\n\n", s(&p)),
                );
                closure_args(fx, &ci)
            },
        ),
        fails(
            "a total-nar-size that is no number",
            &["total-nar-size", "expected a number of bytes"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], Some(&[s(&p).into()]));
                write_as(&fx.user, &ci.join("total-nar-size"), "lots\n");
                closure_args(fx, &ci)
            },
        ),
        fails("a missing closure", &["cannot read", "no-closure"], |fx| {
            closure_args(fx, &fx.path("src/no-closure"))
        }),
        fails(
            "a closure with no subvolume for the store",
            &["no subvolume holds /nix/store", "--subvol @nix:/nix"],
            |fx| {
                let p = fx.store_path("hello");
                let ci = fx.closure(&[s(&p).into()], None);
                let mut a = rootfs_args(fx, &["@home:/home"]);
                a.extend(args(&["--closure", s(&ci), "--store-dir", s(&fx.store())]));
                a
            },
        ),
        builds(
            "an empty closure: a warning, an image",
            |fx| {
                fx.file("etc/x", "x");
                let ci = fx.closure(&[], Some(&[]));
                closure_args(fx, &ci)
            },
            |_, b| {
                assert!(b.warnings().contains("the closure is empty"), "{}", b.out);
                assert_eq!(b.report["store_paths"], 0);
                assert!(b.out.stderr.contains("the closure is empty"), "{}", b.out);
            },
        ),
        builds(
            "a closure with registration",
            |fx| {
                let p = fx.store_path("hello");
                let q = fx.store_path("world");
                let ci = fx.closure(
                    &[s(&p).into(), s(&q).into()],
                    Some(&[s(&q).into(), s(&p).into()]),
                );
                closure_args(fx, &ci)
            },
            |_, b| {
                b.expect("@nix", &format!("store/{HASH}-hello/bin/hello"));
                b.expect("@nix", &format!("store/{HASH}-world/bin/world"));
                assert_eq!(b.report["registration"], "/nix-path-registration");
                b.expect("@", "nix-path-registration");
            },
        ),
    ]
}

#[test]
fn closures() {
    run_table(closure_cases());
}
