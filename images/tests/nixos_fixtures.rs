//! Every NixOS `fileSystems` fixture in tests/fixtures/nixos, with the
//! layout (or error) it must give.

use std::path::Path;

use rootbox_images::layout::Layout;
use rootbox_images::nixos::{from_nixos_file_systems, ImageDevice, NixosLayout};
use rootbox_images::spec::SubvolKind::{self, Default as Def, Rw};

enum Expect {
    Ok {
        subvols: &'static [(&'static str, &'static str, SubvolKind)],
        root_is_tmpfs: bool,
        ignored: &'static [&'static str],
        label: Option<&'static str>,
        uuid: Option<&'static str>,
    },
    Err(&'static [&'static str]),
}

fn any() -> ImageDevice {
    ImageDevice::default()
}

fn label(l: &str) -> ImageDevice {
    ImageDevice {
        label: Some(l.into()),
        ..ImageDevice::default()
    }
}

fn cases() -> Vec<(&'static str, ImageDevice, Expect)> {
    vec![
        (
            "sd-image.json",
            label("NIXOS_SD"),
            Expect::Ok {
                subvols: &[
                    ("@", "/", Def),
                    ("@home", "/home", Rw),
                    ("@nix", "/nix", Rw),
                ],
                root_is_tmpfs: false,
                ignored: &["/boot/firmware: fsType vfat, not btrfs"],
                label: Some("NIXOS_SD"),
                uuid: None,
            },
        ),
        (
            "impermanence.json",
            any(),
            Expect::Ok {
                subvols: &[("@nix", "/nix", Rw), ("@persist", "/persist", Rw)],
                root_is_tmpfs: true,
                ignored: &["/boot: fsType vfat, not btrfs"],
                label: None,
                uuid: Some("0b7e7c3a-5f1e-4c61-9f3d-2a1e8c4b6d10"),
            },
        ),
        (
            "slash-subvol.json",
            label("nixos"),
            Expect::Ok {
                subvols: &[
                    ("@", "/", Def),
                    ("@nix", "/nix", Rw),
                    ("@log", "/var/log", Rw),
                ],
                root_is_tmpfs: false,
                ignored: &[],
                label: Some("nixos"),
                uuid: None,
            },
        ),
        (
            "nested-mountpoints.json",
            any(),
            Expect::Ok {
                subvols: &[
                    ("@", "/", Def),
                    ("@nix", "/nix", Rw),
                    ("@store", "/nix/store", Rw),
                    ("@home", "/home", Rw),
                    ("@cache", "/home/alice/.cache", Rw),
                ],
                root_is_tmpfs: false,
                ignored: &[],
                label: None,
                uuid: None,
            },
        ),
        (
            "foreign-devices.json",
            label("nixos"),
            Expect::Ok {
                subvols: &[("@", "/", Def)],
                root_is_tmpfs: false,
                ignored: &[
                    "/data: btrfs on another device (label=bulk)",
                    "/mnt/pool: mounts the top level of the image (no subvolume to create)",
                    "/srv: fsType ext4, not btrfs",
                    "/tmp: fsType tmpfs, not btrfs",
                ],
                label: Some("nixos"),
                uuid: None,
            },
        ),
        (
            "list-form.json",
            any(),
            Expect::Ok {
                subvols: &[("@", "/", Def), ("@nix", "/nix", Rw)],
                root_is_tmpfs: false,
                ignored: &["/boot: fsType vfat, not btrfs"],
                label: Some("nixos"),
                uuid: None,
            },
        ),
        (
            "foreign-devices-ambiguous",
            any(),
            Expect::Err(&["several devices", "label=nixos", "label=bulk", "--label"]),
        ),
        (
            "subvolid.json",
            any(),
            Expect::Err(&["subvolid=256", "not stable", "subvol=NAME"]),
        ),
        (
            "no-btrfs.json",
            label("nixos"),
            Expect::Err(&["no btrfs entry on the image device (label=nixos)"]),
        ),
        (
            "wrong-types.json",
            any(),
            Expect::Err(&[
                "/home.options",
                "invalid type: string",
                "expected a sequence",
            ]),
        ),
        (
            "nested-subvol.json",
            any(),
            Expect::Err(&["subvol=@/home", "top level", "subvol=@home"]),
        ),
        ("truncated.json", any(), Expect::Err(&["3:0", "EOF"])),
        (
            "top-level-root.json",
            any(),
            Expect::Err(&["top level of the image as /", "subvol=@", "tmpfs"]),
        ),
    ]
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nixos")
}

fn check(name: &str, dev: &ImageDevice, expect: &Expect) {
    let file = name
        .strip_suffix("-ambiguous")
        .map_or(name.to_owned(), |n| format!("{n}.json"));
    let json = std::fs::read_to_string(fixture_dir().join(&file)).unwrap();
    let got = from_nixos_file_systems(&json, dev);
    match (expect, got) {
        (
            Expect::Ok {
                subvols,
                root_is_tmpfs,
                ignored,
                label,
                uuid,
            },
            Ok(layout),
        ) => {
            let NixosLayout { subvolumes, .. } = &layout;
            let got: Vec<(&str, &str, SubvolKind)> = subvolumes
                .iter()
                .map(|s| (s.name.as_str(), s.mountpoint.as_str(), s.kind))
                .collect();
            assert_eq!(got, *subvols, "{name}: subvolumes");
            assert_eq!(
                layout.root_is_tmpfs, *root_is_tmpfs,
                "{name}: root_is_tmpfs"
            );
            let mut ign = layout.ignored.clone();
            ign.sort();
            assert_eq!(ign, *ignored, "{name}: ignored");
            assert_eq!(layout.label.as_deref(), *label, "{name}: label");
            assert_eq!(layout.uuid.as_deref(), *uuid, "{name}: uuid");
            // The subvolumes always form a valid layout, rooted unless / is a tmpfs.
            let l = Layout::new(subvolumes).unwrap();
            assert_eq!(l.has_root(), !root_is_tmpfs, "{name}: has_root");
        }
        (Expect::Err(needles), Err(e)) => {
            let msg = e.to_string();
            for n in *needles {
                assert!(msg.contains(n), "{name}: {msg:?} lacks {n:?}");
            }
        }
        (Expect::Ok { .. }, Err(e)) => panic!("{name}: expected a layout, got error: {e}"),
        (Expect::Err(_), Ok(l)) => panic!("{name}: expected an error, got {l:?}"),
    }
}

#[test]
fn every_fixture_gives_its_expected_outcome() {
    let cases = cases();
    for (name, dev, expect) in &cases {
        check(name, dev, expect);
    }
    // Every fixture file is covered by a case.
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            cases.iter().any(|(n, _, _)| *n == file),
            "fixture {file} has no expected outcome"
        );
    }
}

#[test]
fn sd_image_mount_options_are_reported() {
    let json = std::fs::read_to_string(fixture_dir().join("sd-image.json")).unwrap();
    let l = from_nixos_file_systems(&json, &any()).unwrap();
    let nix = l.mount_options.iter().find(|(mp, _)| mp == "/nix").unwrap();
    assert_eq!(nix.1, vec!["compress=zstd", "noatime"]);
    let layout = Layout::new(&l.subvolumes).unwrap();
    assert_eq!(
        layout.mkfs_subvol_args(),
        vec!["default:@", "rw:@home", "rw:@nix"]
    );
    assert_eq!(layout.subvolumes()[0].masked, vec!["home", "nix"]);
}

#[test]
fn impermanence_leaves_out_etc() {
    let json = std::fs::read_to_string(fixture_dir().join("impermanence.json")).unwrap();
    let l = from_nixos_file_systems(&json, &any()).unwrap();
    let layout = Layout::new(&l.subvolumes).unwrap();
    let out = layout
        .uncovered(|rel| {
            Ok(match rel {
                "" => vec!["etc".into(), "nix".into(), "persist".into(), "var".into()],
                other => panic!("listed {other:?}, which holds no mount point"),
            })
        })
        .unwrap();
    assert_eq!(out, vec!["/etc", "/var"]);
    assert_eq!(layout.locate("/etc/machine-id"), None);
    let (sv, rel) = layout.locate("/nix/nix-path-registration").unwrap();
    assert_eq!(
        (sv.name.as_str(), rel.as_str()),
        ("@nix", "nix-path-registration")
    );
}
