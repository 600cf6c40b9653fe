//! The `--json` result has the documented fields.

use super::*;

// ---- the JSON result --------------------------------------------------------------

#[test]
fn json_result_has_the_documented_fields() {
    let user = setup();
    let c = ErrCase::new(&user);
    file_as(&user, &c.root.join("home/bob/file"), "bob\n", 0o644);
    let img = c.out_dir.join("x.img");
    let started = std::time::Instant::now();
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--subvol",
            "@home:/home",
            "--uuid",
            UUID,
            "--label",
            "jsonlabel",
            "-o",
            s(&img),
        ],
    );
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(r["image"], s(&img), "{r:#}");
    assert_eq!(
        r["size_bytes"].as_u64(),
        Some(fs::metadata(&img).unwrap().len()),
        "{r:#}"
    );
    assert!(r["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(r["uuid"], UUID, "{r:#}");
    assert_eq!(r["label"], "jsonlabel", "{r:#}");
    assert_eq!(r["verified"], true, "{r:#}");
    let subvols = r["subvolumes"].as_array().expect("subvolumes");
    assert_eq!(subvols.len(), 2, "{r:#}");
    for sv in subvols {
        for f in ["name", "mountpoint"] {
            assert!(sv[f].is_string(), "subvolume field {f}: {sv:#}");
        }
        for f in ["id", "entries", "bytes"] {
            assert!(sv[f].is_u64(), "subvolume field {f}: {sv:#}");
        }
        assert!(sv["entries"].as_u64().unwrap() >= 1, "{sv:#}");
    }
    let home = subvols
        .iter()
        .find(|s| s["name"] == "@home")
        .expect("@home");
    assert_eq!(
        home["entries"], 3,
        "bob, bob/file and the root of @home: {home:#}"
    );
    assert_eq!(home["bytes"], 4, "{home:#}");
    assert!(r["entries"].as_u64().unwrap() >= 6, "{r:#}");
    // Seconds of each phase: within the build's total, which is within
    // the wall-clock time the test measured around the command; mkfs,
    // the verification and the whole build take some time.
    let t = &r["timings"];
    let total = t["total"].as_f64().expect("timings.total");
    assert!(
        total > 0.0 && total <= wall,
        "timings.total = {total}, wall {wall:.3}: {t}"
    );
    for f in ["plan", "stage", "copy", "mkfs", "verify", "total"] {
        let v = t[f]
            .as_f64()
            .unwrap_or_else(|| panic!("timings.{f} missing: {r:#}"));
        assert!(
            (0.0..=total).contains(&v),
            "timings.{f} = {v}, total {total}: {t}"
        );
    }
    for f in ["mkfs", "verify"] {
        assert!(t[f].as_f64().unwrap() > 0.0, "timings.{f} = 0: {t}");
    }
    assert!(t["total"].as_f64().unwrap() >= t["mkfs"].as_f64().unwrap());
    assert!(
        r["warnings"].is_array() && r["left_out"].is_array(),
        "{r:#}"
    );
    assert!(
        r["registration"].is_null(),
        "no closure, no registration: {r:#}"
    );
    // Which filesystem, and btrfs's own details in one place.
    assert_eq!(r["filesystem"], "btrfs", "{r:#}");
    let b = &r["btrfs"];
    assert!(
        b["mkfs_version"]
            .as_str()
            .is_some_and(|v| v.split('.').all(|n| n.parse::<u32>().is_ok())),
        "{r:#}"
    );
    assert!(
        b["mkfs_features"].as_array().is_some_and(|f| !f.is_empty()),
        "{r:#}"
    );
    assert!(b["reflink"]["used"].is_boolean(), "{r:#}");
    assert!(b["reproducible"].is_null(), "not asked for: {r:#}");
    for other in ["ext4", "erofs", "squashfs", "mkfs_version", "reflink"] {
        assert!(r.get(other).is_none(), "{other} at the top: {r:#}");
    }
    // The uuid is the image's.
    let ins = Inspected::of(&user, &img);
    assert_eq!(ins.doc["filesystem"]["fsid"], UUID);
    assert_eq!(ins.doc["filesystem"]["label"], "jsonlabel");
}
