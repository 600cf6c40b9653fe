#!/usr/bin/python3
"""Re-number a tree made by `mmdebstrap --mode=unshare` into the id
convention of `rootbox --map subid`.  A workaround, NOT the product path:

  mmdebstrap --mode=unshare:  id N in the tree  = SUBID_START + N (root = START)
  rootbox --map subid:        namespace id 0 = the caller, N = SUBID_START + N - 1

so rootbox sees mmdebstrap's root as uid 1.  Run INSIDE
`rootbox run --map subid -- mmdebstrap-to-rootbox-ids.py TREE` (as the build
user): there every owner shows up one too high, and this lowers each by one
(uid 1 -> 0 = the caller, ...), puts back set-id bits chown cleared, and
lowers the named entries of POSIX ACLs the same way.  Fails on file
capabilities (chown drops them; none in a minbase tree).
"""
import os
import stat
import struct
import sys

tree = sys.argv[1]
ACLS = ("system.posix_acl_access", "system.posix_acl_default")
ACL_USER, ACL_GROUP = 0x02, 0x08


def lower(i):
    if i == 0:
        sys.exit(f"mmdebstrap-to-rootbox-ids: id 0 (the caller) in the tree: not an mmdebstrap tree, or shifted already")
    if i == 65534:
        sys.exit("mmdebstrap-to-rootbox-ids: the overflow id: an owner outside the subordinate range")
    return i - 1


def fix_acl(p, name):
    try:
        raw = os.getxattr(p, name, follow_symlinks=False)
    except OSError:
        return False
    out = bytearray(raw[:4])
    for off in range(4, len(raw), 8):
        tag, perm, i = struct.unpack_from("<HHI", raw, off)
        if tag in (ACL_USER, ACL_GROUP):
            i = lower(i)
        out += struct.pack("<HHI", tag, perm, i)
    os.setxattr(p, name, bytes(out), follow_symlinks=False)
    return True


dev = os.lstat(tree).st_dev
n = acls = 0
seen = set()  # hard links: lower each inode once
for top, dirs, files in os.walk(tree):
    dirs[:] = [d for d in dirs if os.lstat(os.path.join(top, d)).st_dev == dev]
    for name in [None] + dirs + files:
        if name is None and top != tree:
            continue
        p = top if name is None else os.path.join(top, name)
        st = os.lstat(p)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
        islnk = stat.S_ISLNK(st.st_mode)
        if not islnk:
            try:
                os.getxattr(p, "security.capability", follow_symlinks=False)
                sys.exit(f"mmdebstrap-to-rootbox-ids: {p} has file capabilities (chown would drop them)")
            except OSError:
                pass
        os.lchown(p, lower(st.st_uid), lower(st.st_gid))
        if not islnk:
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(p, stat.S_IMODE(st.st_mode))
            for a in ACLS:
                acls += fix_acl(p, a)
        n += 1
print(f"mmdebstrap-to-rootbox-ids: {n} entries, {acls} ACLs renumbered", file=sys.stderr)
