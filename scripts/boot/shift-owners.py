#!/usr/bin/python3
"""Give a root-owned rootfs the owners a rootless (subordinate-id) population
would leave, e.g. `mmdebstrap --mode=unshare`: id 0 -> the build user's own
uid/gid, id N (N >= 1) -> START + N - 1 from /etc/subuid and /etc/subgid.
That is the map `rootbox build --map subid` undoes (README, Owners).

    shift-owners.py TREE UID GID SUBUID_START SUBGID_START COUNT

chown clears setuid/setgid bits, so the mode is put back afterwards.
POSIX ACL entries are not shifted (they keep naming host ids).
"""
import os
import stat
import sys

tree, uid, gid, sus, sgs, count = sys.argv[1], *map(int, sys.argv[2:7])


def shift(i, own, start):
    if i == 0:
        return own
    if i > count:
        sys.exit(f"shift-owners: id {i} is outside the subordinate range (count {count})")
    return start + i - 1


dev = os.lstat(tree).st_dev
n = 0
for top, dirs, files in os.walk(tree):
    dirs[:] = [d for d in dirs if os.lstat(os.path.join(top, d)).st_dev == dev]
    for name in [None] + dirs + files:
        p = top if name is None else os.path.join(top, name)
        if name is None and top != tree:
            continue  # each directory is handled as an entry of its parent
        st = os.lstat(p)
        os.lchown(p, shift(st.st_uid, uid, sus), shift(st.st_gid, gid, sgs))
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(p, stat.S_IMODE(st.st_mode))
        n += 1
print(f"shift-owners: {n} entries shifted", file=sys.stderr)
