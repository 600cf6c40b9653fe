#!/usr/bin/env python3
"""Read-back checks for tests/nix/run-test (build mode).

  check-image.py dump-tree BTRFS IMAGE SUBVOLS
      Parse `btrfs inspect-internal dump-tree IMAGE`: every INODE_ITEM in
      every tree must have uid 0 and gid 0; the subvolumes (ROOT_REF names
      under the top level) must be exactly SUBVOLS (comma-separated).
  check-image.py registration FILE STORE_PATHS
      FILE is in `nix-store --dump-db` / `--load-db` format; the paths it
      registers must be exactly those listed in STORE_PATHS, and every
      reference must be one of them (a closed closure).
Exits 1 and prints the evidence on failure.
"""
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


def parse_registration(text):
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
        regs[path] = refs
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


def main(argv):
    if len(argv) == 5 and argv[1] == "dump-tree":
        return 0 if dump_tree(argv[2], argv[3], argv[4]) else 1
    if len(argv) == 4 and argv[1] == "registration":
        return 0 if registration(argv[2], argv[3]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
