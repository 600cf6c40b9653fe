//! Spec files in tests/fixtures/spec: the valid ones turn into a layout and
//! mkfs arguments, the broken ones give errors that point at the problem.

use std::path::{Path, PathBuf};

use rootbox_images::layout::Layout;
use rootbox_images::mkfs::{BtrfsProgsVersion, MkfsPlan, MkfsSize};
use rootbox_images::nixos::{from_nixos_file_systems, ImageDevice};
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Compress, Spec, SpecError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name)
}

#[test]
fn full_spec_plans_an_mkfs_run() {
    let path = fixture("full.json");
    let spec = Spec::from_json_file(&path).unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(spec.rootfs.as_deref(), Some(dir.join("./root").as_path()));
    assert_eq!(
        spec.closure.as_deref(),
        Some(dir.join("closure-info").as_path())
    );
    assert_eq!(spec.headroom, ByteSize(256 << 20));
    assert_eq!(spec.compress, Some(Compress::Zstd(Some(3))));

    let layout = Layout::new(&spec.subvolumes).unwrap();
    assert!(layout.has_root());
    let args = layout.mkfs_subvol_args();
    assert_eq!(
        args,
        vec!["default:@", "rw:@home", "rw:@nix", "rw:@persist"]
    );
    let (sv, rel) = layout
        .locate(spec.registration.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        (sv.name.as_str(), rel.as_str()),
        ("@nix", "nix-path-registration")
    );

    let plan = MkfsPlan {
        label: spec.label.clone(),
        uuid: spec.uuid.clone(),
        device_uuid: None,
        compress: spec.compress,
        subvol_args: args,
        inode_flag_args: layout.mkfs_inode_flag_args(),
        size: MkfsSize::Shrink,
        rootdir: "/stage".into(),
        output: "/out/nixos.img".into(),
        reflink: false,
    };
    let installed = BtrfsProgsVersion::parse("mkfs.btrfs, part of btrfs-progs v6.14").unwrap();
    plan.check_version(&installed).unwrap();
    let bookworm = BtrfsProgsVersion::parse("mkfs.btrfs, part of btrfs-progs v6.2").unwrap();
    let e = plan.check_version(&bookworm).unwrap_err().to_string();
    assert!(e.contains("bookworm-backports"), "{e}");

    // --print-spec output reads back to the same spec.
    let printed = serde_json::to_string_pretty(&spec).unwrap();
    assert_eq!(Spec::from_json_str(&printed, "<printed>").unwrap(), spec);
}

#[test]
fn spec_with_file_systems_reads_the_nixos_layout() {
    let spec = Spec::from_json_file(&fixture("nixos-fs.json")).unwrap();
    assert_eq!(spec.size, Size::Fixed(ByteSize(4 << 30)));
    let fs_path = spec.file_systems.clone().unwrap();
    let json = std::fs::read_to_string(&fs_path).unwrap();
    let dev = ImageDevice {
        label: spec.label.clone(),
        ..ImageDevice::default()
    };
    let nixos = from_nixos_file_systems(&json, &dev).unwrap();
    let layout = Layout::new(&nixos.subvolumes).unwrap();
    assert_eq!(
        layout.mkfs_subvol_args(),
        vec!["default:@", "rw:@home", "rw:@nix"]
    );
}

#[test]
fn broken_specs_point_at_the_problem() {
    let cases: &[(&str, &[&str])] = &[
        (
            "bad-mountpoint-type.json",
            &["bad-mountpoint-type.json:4:36: subvolumes[1].mountpoint: invalid type: integer `4`, expected a string"],
        ),
        ("unknown-field.json", &["unknown-field.json:3:", "unknown field `subvols`", "expected one of", "`subvolumes`"]),
        ("truncated.json", &["truncated.json:5:0: ", "truncated"]),
        ("negative-size.json", &["negative-size.json:2:", "size: ", "negative"]),
        ("huge-headroom.json", &["headroom: ", "\"20000000T\"", "too large"]),
        ("bad-uuid.json", &["uuid: ", "8-4-4-4-12"]),
        ("bad-compress.json", &["compress: ", "levels are 1..15"]),
        ("both-layouts.json", &["both-layouts.json: ", "both \"subvolumes\" and \"fileSystems\""]),
    ];
    for (name, needles) in cases {
        let e = Spec::from_json_file(&fixture(name)).unwrap_err();
        assert!(
            matches!(e, SpecError::Json { .. } | SpecError::Invalid { .. }),
            "{name}: {e:?}"
        );
        let msg = e.to_string();
        for n in *needles {
            assert!(msg.contains(n), "{name}: {msg:?} lacks {n:?}");
        }
    }
}

#[test]
fn layout_errors_surface_after_parsing() {
    let spec = Spec::from_json_file(&fixture("bad-layout.json")).unwrap();
    let e = Layout::new(&spec.subvolumes).unwrap_err().to_string();
    assert_eq!(
        e,
        "subvolume \"@home\": mount point \"/home/\" is not normalized; write \"/home\""
    );
}

#[test]
fn missing_spec_file_names_it() {
    let e = Spec::from_json_file(&fixture("nope.json")).unwrap_err();
    assert!(matches!(e, SpecError::Io { .. }));
    assert!(e.to_string().contains("nope.json"), "{e}");
}
