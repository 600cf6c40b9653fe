//! Reading images back: [`Inspected`] (`rootbox inspect --json`, as the
//! test user: no root, no mount) and [`assert_btrfs_check`].

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::cmd::{rootbox, run, s};
use super::user::User;

/// An image as `rootbox inspect --json` (run as `user`) reads it: the
/// whole document, and every entry keyed by its path from the top level
/// (`@nix/store/…`; the top level itself is ``, a subvolume's root its name).
pub struct Inspected {
    pub doc: serde_json::Value,
    pub entries: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Inspected {
    pub fn of(user: &User, image: &Path) -> Inspected {
        let out = run(rootbox(user).arg("inspect").arg("--json").arg(image));
        out.assert_success();
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect --json does not parse: {e}\n{out}"));
        let mut entries = std::collections::BTreeMap::new();
        for l in doc["listings"].as_array().expect("listings") {
            let sv = l["subvolume_path"].as_str().expect("subvolume_path");
            for e in l["entries"].as_array().expect("entries") {
                let p = e["path"].as_str().expect("path");
                let key = [sv, p]
                    .iter()
                    .filter(|x| !x.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/");
                entries.insert(key, e.clone());
            }
        }
        Inspected { doc, entries }
    }

    #[track_caller]
    pub fn get(&self, key: &str) -> &serde_json::Value {
        self.entries.get(key).unwrap_or_else(|| {
            panic!(
                "{key} is not in the image; it has:\n{}",
                self.entries.keys().cloned().collect::<Vec<_>>().join("\n")
            )
        })
    }
}

impl Inspected {
    /// Permission bits and type bits of an entry (st_mode).
    pub fn mode(&self, key: &str) -> u32 {
        self.get(key)["mode"].as_u64().expect("mode") as u32
    }

    /// (uid, gid, st_mode) of an entry.
    #[track_caller]
    pub fn owner_mode(&self, key: &str) -> (u32, u32, u32) {
        let e = self.get(key);
        (
            e["uid"].as_u64().expect("uid") as u32,
            e["gid"].as_u64().expect("gid") as u32,
            e["mode"].as_u64().expect("mode") as u32,
        )
    }

    /// Subvolume paths (the top level left out).
    pub fn subvolumes(&self) -> BTreeSet<String> {
        self.doc["subvolumes"]
            .as_array()
            .expect("subvolumes")
            .iter()
            .filter(|s| s["id"].as_u64() != Some(5))
            .map(|s| s["path"].as_str().expect("path").to_string())
            .collect()
    }

    /// The path of the default subvolume (`` for the top level).
    pub fn default_subvolume(&self) -> String {
        let id = self.doc["default_subvolume"]
            .as_u64()
            .expect("default_subvolume");
        self.doc["subvolumes"]
            .as_array()
            .expect("subvolumes")
            .iter()
            .find(|s| s["id"].as_u64() == Some(id))
            .map(|s| s["path"].as_str().expect("path").to_string())
            .unwrap_or_else(|| panic!("default subvolume {id} is not listed"))
    }

    /// Entries whose owner is not 0:0, as "path uid:gid".
    pub fn not_root_owned(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e["uid"].as_u64() != Some(0) || e["gid"].as_u64() != Some(0))
            .map(|(k, e)| format!("{k} {}:{}", e["uid"], e["gid"]))
            .collect()
    }

    /// The names directly below `key`.
    pub fn children(&self, key: &str) -> BTreeSet<String> {
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        self.entries
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// Value of an xattr of an entry (inspect shows printable values as
    /// `value`, others as `hex`), if present.
    pub fn xattr(&self, key: &str, name: &str) -> Option<Vec<u8>> {
        self.get(key)["xattrs"]
            .as_array()
            .expect("xattrs")
            .iter()
            .find(|x| x["name"].as_str() == Some(name))
            .map(|x| match (x["value"].as_str(), x["hex"].as_str()) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(hex)) => (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect(),
                _ => panic!("an xattr with neither value nor hex: {x}"),
            })
    }
}

/// `btrfs check --readonly` on an (unmounted) image: must find no error.
#[track_caller]
pub fn assert_btrfs_check(image: &Path) {
    let out = run(Command::new("btrfs").args(["check", "--readonly", s(image)]));
    out.assert_success();
    assert!(
        (out.stdout.clone() + &out.stderr).contains("no error found"),
        "btrfs check did not say `no error found`:\n{out}"
    );
}

/// Every entry of `image` as rootbox's reader gives it (`inspect` for
/// btrfs, `__fs-read` for the others), by path, without inode numbers
/// (which only btrfs's numbering order changes): what the twin tests of
/// builds with and without a namespace compare.
pub fn listing(
    user: &User,
    fs_name: &str,
    image: &Path,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut entries = if fs_name == "btrfs" {
        Inspected::of(user, image).entries
    } else {
        let out = run(rootbox(user).args(["__fs-read", "--filesystem", fs_name, s(image)]));
        out.assert_success();
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        v.as_array()
            .expect("an array")
            .iter()
            .map(|i| (i["path"].as_str().expect("path").to_string(), i.clone()))
            .collect()
    };
    for e in entries.values_mut() {
        e.as_object_mut().expect("an object").remove("ino");
    }
    entries
}

/// Two listings ([`listing`]) hold the same paths, each entry equal.
#[track_caller]
pub fn assert_same_listing(
    a: &std::collections::BTreeMap<String, serde_json::Value>,
    b: &std::collections::BTreeMap<String, serde_json::Value>,
    what: &str,
) {
    let keys = |m: &std::collections::BTreeMap<String, serde_json::Value>| {
        m.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(keys(a), keys(b), "{what}: the images hold different paths");
    for (path, e) in a {
        assert_eq!(Some(e), b.get(path), "{what}: {path} differs");
    }
}
