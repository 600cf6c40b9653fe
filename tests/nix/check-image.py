#!/usr/bin/env python3
"""Read-back checks for tests/nix/run-test (build, sd-image and disk modes).

  check-image.py dump-tree BTRFS IMAGE SUBVOLS
      Parse `btrfs inspect-internal dump-tree IMAGE`: every INODE_ITEM in
      every tree must have uid 0 and gid 0; the subvolumes (ROOT_REF names
      under the top level) must be exactly SUBVOLS (comma-separated).
  check-image.py registration FILE STORE_PATHS
      FILE is in `nix-store --dump-db` / `--load-db` format; the paths it
      registers must be exactly those listed in STORE_PATHS, and every
      reference must be one of them (a closed closure).
  check-image.py same-registration A B
      Two registrations (e.g. closureInfo's and `nix-store --dump-db`'s)
      hold the same records: paths, NAR hashes (in whatever encoding),
      sizes and references.
  check-image.py sd-partitions SFDISK_JSON FS_BYTES
      `sfdisk --json` of an SD image is what nixpkgs' sd-image.nix makes with
      its defaults: MBR id 0x2178694e, FAT (type b, bootable) at 8 MiB for
      30 MiB, Linux (83) right after it and big enough for FS_BYTES.
  check-image.py sd-image INSPECT_JSON LAYOUT STORE_PATHS RESULT_JSON
      `rootbox inspect --json` of the root partition: every entry 0:0; with
      LAYOUT sd-image everything (store, registration, /boot) in one
      subvolume @, the default; with LAYOUT subvolumes / in @
      (the default subvolume) and the store in @nix. RESULT_JSON (rootbox's report) must say copied_bytes 0:
      a Nix build stages the closure without copying it.
  check-image.py disk-table LAYOUT SFDISK_JSON REPORT_JSON
      `sfdisk --json` of a disk from tests/nix/disk.nix is the table that
      file asked nix/make-disk.nix for (LAYOUT rpi: sd-image.nix's MBR;
      uefi: GPT with ESP, raw uboot, root-x86-64 legacy-bootable), the root
      partition holds its filesystem (REPORT_JSON, `rootbox disk --json`),
      and the report says verified.
Exits 1 and prints the evidence on failure.
"""
import base64
import json
import re
import subprocess
import sys


def dump_tree(btrfs, image, want_subvols):
    text = subprocess.run(
        [btrfs, "inspect-internal", "dump-tree", image],
        check=True, capture_output=True, text=True,
    ).stdout
    ok = True
    tree = None
    key = None
    inodes = 0
    bad = []
    subvols = set()
    for line in text.splitlines():
        m = re.match(r"(?:fs|file) tree key \((\S+) ROOT_ITEM", line) or re.match(
            r"^(\S+) tree key \(", line)
        if m:
            tree = m.group(1)
        m = re.search(r"key \((\S+) INODE_ITEM \d+\)", line)
        if m:
            key = m.group(1)
            continue
        m = re.search(r"\buid (\d+) gid (\d+)\b", line)
        if m and key is not None:
            inodes += 1
            uid, gid = int(m.group(1)), int(m.group(2))
            if (uid, gid) != (0, 0):
                bad.append(f"tree {tree} inode {key}: uid {uid} gid {gid}")
            key = None
        m = re.search(r"root ref key dirid \d+ sequence \d+ name (.+)$", line)
        if m:
            subvols.add(m.group(1))
    print(f"dump-tree: {inodes} INODE_ITEMs, subvolumes {sorted(subvols)}")
    if inodes == 0:
        print("dump-tree: no INODE_ITEM found (parser out of date?)")
        ok = False
    if bad:
        print("dump-tree: inodes not owned by 0:0:\n  " + "\n  ".join(bad))
        ok = False
    want = set(filter(None, want_subvols.split(",")))
    if subvols != want:
        print(f"dump-tree: subvolumes {sorted(subvols)}, expected {sorted(want)}")
        ok = False
    return ok


def parse_registration(text, full=False):
    """Records: path, narHash, narSize, deriver, nrRefs, refs..."""
    lines = text.split("\n")
    i = 0
    regs = {}
    while i < len(lines) and lines[i] != "":
        path = lines[i]
        nar_hash, nar_size, _deriver = lines[i + 1], lines[i + 2], lines[i + 3]
        n = int(lines[i + 4])
        refs = lines[i + 5:i + 5 + n]
        if not path.startswith("/nix/store/") or not nar_size.isdigit() or not nar_hash:
            raise ValueError(f"bad record at line {i + 1}: {lines[i:i + 5]}")
        regs[path] = (nar_hash, int(nar_size), sorted(refs)) if full else refs
        i += 5 + n
    return regs


def registration(file, store_paths):
    want = set(open(store_paths).read().split())
    try:
        regs = parse_registration(open(file).read())
    except (OSError, ValueError, IndexError) as e:
        print(f"registration: cannot parse {file}: {e}")
        return False
    ok = True
    print(f"registration: {len(regs)} paths: {sorted(regs)}")
    if set(regs) != want:
        print(f"registration: missing {sorted(want - set(regs))}, extra {sorted(set(regs) - want)}")
        ok = False
    for p, refs in regs.items():
        outside = [r for r in refs if r not in want]
        if outside:
            print(f"registration: {p} references paths outside the closure: {outside}")
            ok = False
    return ok


NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def hash_bytes(h):
    """A sha256 in any of Nix's spellings: hex, nix32, SRI, each with or
    without an `sha256:` prefix."""
    if h.startswith("sha256-"):
        return base64.b64decode(h[7:])
    h = h.removeprefix("sha256:")
    if len(h) == 64:
        return bytes.fromhex(h)
    if len(h) == 52:
        out = bytearray(32)
        for n in range(len(h)):
            digit = NIX32.index(h[len(h) - n - 1])
            b, j = divmod(n * 5, 8)
            out[b] |= (digit << j) & 0xFF
            if b + 1 < 32:
                out[b + 1] |= digit >> (8 - j)
        return bytes(out)
    raise ValueError(f"unknown hash encoding: {h}")


def same_registration(a, b):
    try:
        ra = parse_registration(open(a).read(), full=True)
        rb = parse_registration(open(b).read(), full=True)
        na = {p: (hash_bytes(h), s, r) for p, (h, s, r) in ra.items()}
        nb = {p: (hash_bytes(h), s, r) for p, (h, s, r) in rb.items()}
    except (OSError, ValueError, IndexError) as e:
        print(f"same-registration: {e}")
        return False
    if na != nb:
        for p in sorted(set(na) | set(nb)):
            if na.get(p) != nb.get(p):
                print(f"same-registration: {p}: {ra.get(p)} vs {rb.get(p)}")
        return False
    print(f"same-registration: {len(na)} records agree")
    return True


def sd_partitions(pt_json, fs_bytes):
    pt = json.load(open(pt_json))["partitiontable"]
    parts = pt.get("partitions", [])
    mib = 1024 * 1024 // 512
    want = [
        {"start": 8 * mib, "size": 30 * mib, "type": "b", "bootable": True},
        {"start": 38 * mib, "type": "83"},
    ]
    ok = pt.get("label") == "dos" and pt.get("id") == "0x2178694e" and len(parts) == 2
    for p, w in zip(parts, want):
        ok &= all(p.get(k) == v for k, v in w.items())
    if len(parts) == 2 and parts[1].get("size", 0) * 512 < int(fs_bytes):
        ok = False
    if not ok:
        print(f"sd-partitions: got {json.dumps(pt)}, expected label dos id 0x2178694e, {want}")
    else:
        print(f"sd-partitions: {[(p['start'], p['size'], p['type']) for p in parts]}")
    return ok


def find_key(doc, key):
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        doc = list(doc.values())
    if isinstance(doc, list):
        for v in doc:
            r = find_key(v, key)
            if r is not None:
                return r
    return None


def sd_image(inspect_json, layout, store_paths, result_json):
    doc = json.load(open(inspect_json))
    subvols = {s["path"]: s for s in doc["subvolumes"]}
    ok = True
    entries = []
    for listing in doc["listings"]:
        prefix = listing["subvolume_path"].strip("/")
        base = listing["path"].strip("/")
        for e in listing["entries"]:
            rel = "/".join(x for x in (prefix, base, e["path"].strip("/")) if x)
            entries.append((rel, e))
    paths = {p for p, _ in entries}
    bad = [f"{e['uid']}:{e['gid']} {p}" for p, e in entries if (e["uid"], e["gid"]) != (0, 0)]
    print(f"sd-image: {len(entries)} entries, subvolumes {sorted(subvols)}")
    if not entries:
        print("sd-image: no entries listed")
        ok = False
    if bad:
        print("sd-image: not owned by 0:0:\n  " + "\n  ".join(bad[:20]))
        ok = False
    # sd-image's own arguments carry no layout: make-btrfs-fs.nix then makes
    # one default subvolume @ holding everything.
    if layout == "sd-image":
        root, store, want_subvols = "@", "@/nix/store", {"@"}
    else:
        root, store, want_subvols = "@", "@nix/store", {"@", "@nix"}
    default = doc["default_subvolume"]
    if subvols.get("@", {}).get("id") != default:
        print(f"sd-image: default subvolume is {default}, not @ ({subvols.get('@')})")
        ok = False
    got_subvols = {p.strip("/") for p in subvols} - {""}
    if got_subvols != want_subvols:
        print(f"sd-image: subvolumes {sorted(got_subvols)}, expected {sorted(want_subvols)}")
        ok = False
    want = [f"{store}/{p.rsplit('/', 1)[1]}" for p in open(store_paths).read().split()]
    want += [f"{root}/boot/extlinux/extlinux.conf".lstrip("/"), f"{root}/nix-path-registration".lstrip("/")]
    missing = [p for p in want if p not in paths]
    if missing:
        print(f"sd-image: missing {missing}; have e.g. {sorted(paths)[:15]}")
        ok = False
    stray = sorted(p for p in paths if "/store/" in p and not any(p == w or p.startswith(w + "/") for w in want))
    if stray:
        print(f"sd-image: store entries outside the closure's paths: {stray[:10]}")
        ok = False
    result = json.load(open(result_json))
    copied = find_key(result, "copied_bytes")
    print(f"sd-image: report copied_bytes={copied} bound_bytes={find_key(result, 'bound_bytes')} "
          f"binds={find_key(result, 'binds')} reproducible={json.dumps(find_key(result, 'reproducible'))}")
    if copied != 0:
        print(f"sd-image: rootbox copied {copied} bytes in a Nix build (SOURCE_DATE_EPOCH is always "
              "set there); bind staging copies nothing")
        ok = False
    return ok


def disk_table(layout, pt_json, report_json):
    """The table sfdisk reads from a disk of tests/nix/disk.nix against what
    that file asked make-disk.nix for (and rootbox's report of it)."""
    pt = json.load(open(pt_json))["partitiontable"]
    parts = pt.get("partitions", [])
    report = json.load(open(report_json))
    mib = 1024 * 1024 // 512
    root_fs = report["partitions"][-1]["filesystem_bytes"]
    if layout == "rpi":
        # sd-image.nix's defaults: FAT b bootable at 8 MiB, 30 MiB; 83 at 38 MiB.
        want_pt = {"label": "dos", "id": "0x2178694e"}
        want = [
            {"start": 8 * mib, "size": 30 * mib, "type": "b", "bootable": True},
            {"start": 38 * mib, "type": "83"},
        ]
    else:
        want_pt = {"label": "gpt"}
        want = [
            {"start": 1 * mib, "size": 64 * mib, "name": "firmware",
             "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
            {"start": 65 * mib, "size": 8 * mib, "name": "uboot",
             "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"},
            {"start": 73 * mib, "name": "root", "attrs": "LegacyBIOSBootable",
             "type": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"},
        ]
    ok = all(pt.get(k) == v for k, v in want_pt.items()) and len(parts) == len(want)
    for p, w in zip(parts, want):
        ok &= all(p.get(k) == v for k, v in w.items())
        ok &= p.get("bootable", False) == w.get("bootable", False)
    if parts and parts[-1].get("size", 0) * 512 < root_fs:
        print(f"disk-table: root partition smaller than its filesystem ({root_fs} bytes)")
        ok = False
    if report.get("verified") is not True:
        print("disk-table: rootbox's report does not say verified")
        ok = False
    if not ok:
        print(f"disk-table: got {json.dumps(pt)}, expected {want_pt} {want}")
    else:
        print(f"disk-table: {[(p['start'], p['size'], p['type']) for p in parts]}")
    return ok


def main(argv):
    if len(argv) == 4 and argv[1] == "same-registration":
        return 0 if same_registration(argv[2], argv[3]) else 1
    if len(argv) == 4 and argv[1] == "sd-partitions":
        return 0 if sd_partitions(argv[2], argv[3]) else 1
    if len(argv) == 6 and argv[1] == "sd-image":
        return 0 if sd_image(argv[2], argv[3], argv[4], argv[5]) else 1
    if len(argv) == 5 and argv[1] == "disk-table":
        return 0 if disk_table(argv[2], argv[3], argv[4]) else 1
    if len(argv) == 5 and argv[1] == "dump-tree":
        return 0 if dump_tree(argv[2], argv[3], argv[4]) else 1
    if len(argv) == 4 and argv[1] == "registration":
        return 0 if registration(argv[2], argv[3]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
