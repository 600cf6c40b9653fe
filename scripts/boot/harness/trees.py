"""The trees the images are built from, and the builders.

Root does what needs root (debootstrap, useradd, handing a tree to the
build user); every image build runs AS the build user through
:meth:`BuildUser.argv`, which asserts that the process has no effective
capabilities before it execs the builder.
"""
import dataclasses
import datetime
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .proc import HarnessError, run, say, tail

HELPERS = Path(__file__).resolve().parent.parent          # scripts/boot
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs first as the build user: refuse to go on with any effective
# capability, then exec the builder in the output directory ($0).
CAP_GUARD = r'''cap=$(awk '/^CapEff/{print $2}' /proc/self/status)
if [ "$cap" != 0000000000000000 ]; then
    echo "boot-test: build would run with capabilities: CapEff=$cap (uid $(id -u))" >&2; exit 99
fi
echo "[as-builder] $(id -un) uid=$(id -u) gid=$(id -g) CapEff=$cap" >&2
cd "$0" && exec "$@"'''


@dataclass(frozen=True)
class Layout:
    """A subvolume layout: the `rootbox build --subvol` arguments, the fstab
    the tree gets (a template in scripts/boot), where each subvolume must be
    mounted after boot, and the kernel's root arguments.  ``fstype`` other
    than btrfs (``--filesystem ext4``): no subvolumes, the whole tree is the
    image and is mounted at /."""
    name: str
    subvols: tuple          # (name, mountpoint, type or None)
    fstab: str
    fstype: str = "btrfs"
    fstab_extra: tuple = ()  # lines appended to the template (with @LABEL@)

    def with_subvol(self, name, mountpoint):
        """This layout with one more subvolume, mounted by an fstab line
        like the template's (e.g. @nix at /nix for --nix-closure)."""
        line = (f"LABEL=@LABEL@   {mountpoint:<13} btrfs  subvol={name},defaults,"
                "x-systemd.device-timeout=10min  0 0")
        return dataclasses.replace(self, name=f"{self.name}+{name.lstrip('@')}", subvols=self.subvols + ((name, mountpoint, None),),
                                   fstab_extra=self.fstab_extra + (line,))

    @property
    def has_root_subvol(self):
        return any(mp == "/" for _, mp, _ in self.subvols)

    @property
    def tmpfs_root(self):
        """btrfs with no subvolume at /: / is a tmpfs made at boot."""
        return self.fstype == "btrfs" and not self.has_root_subvol

    def subvol_args(self):
        out = [] if self.fstype == "btrfs" else ["--filesystem", self.fstype]
        for name, mp, kind in self.subvols:
            out += ["--subvol", f"{name}:{mp}" + (f":{kind}" if kind else "")]
        return out

    def mounts(self):
        """(mount point, FSROOT findmnt must show, or "tmpfs")"""
        if self.fstype != "btrfs":
            return [("/", "/")]
        m = [("/", "tmpfs")] if self.tmpfs_root else []
        return m + [(mp, "/" + name) for name, mp, _ in self.subvols]

    def root_args(self, root):
        """Kernel arguments that find the root filesystem at ``root``
        (LABEL=…, PARTUUID=…)."""
        if self.fstype != "btrfs":
            return f"root={root} rootfstype={self.fstype}"
        if self.has_root_subvol:
            return f"root={root} rootflags=subvol=@ rootfstype=btrfs"
        # initramfs boot script that makes / a tmpfs (scripts/boot/impermanence)
        return f"root={root} boot=rbimperm"


LAYOUTS = {
    # must match fstab.in (and stage-mkfs.sh, the contrast builder)
    "default": Layout("default", (("@", "/", "default"), ("@home", "/home", None),
                                  ("@log", "/var/log", None), ("@srv", "/srv", None)), "fstab.in"),
    # must match fstab-impermanence.in
    "impermanence": Layout("impermanence", (("@etc", "/etc", None), ("@usr", "/usr", None),
                                            ("@var", "/var", None), ("@root", "/root", None),
                                            ("@home", "/home", None), ("@srv", "/srv", None)),
                           "fstab-impermanence.in"),
}
# --filesystem ext4: one root, no subvolumes; must match fstab-ext4.in
EXT4 = Layout("ext4", (), "fstab-ext4.in", "ext4")


@dataclass
class BuildUser:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def ensure(cls, name):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            say(f"creating unprivileged build user {name}")
            run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                check=True, what=f"useradd {name}")
            pw = pwd.getpwnam(name)
        if pw.pw_uid == 0:
            raise HarnessError(f"build user {name} is uid 0")
        return cls(name, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    def subid_range(self, path):
        """(start, count) of the user's first range in /etc/subuid or /etc/subgid."""
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            f = line.split(":")
            if len(f) == 3 and f[0] in (self.name, str(self.uid)):
                return int(f[1]), int(f[2])
        return None

    def subids(self):
        """(uid start, gid start, count) or a HarnessError saying how to add them."""
        u, g = self.subid_range("/etc/subuid"), self.subid_range("/etc/subgid")
        if not u or not g:
            raise HarnessError(
                f"{self.name} has no range in /etc/subuid or /etc/subgid "
                f"(usermod --add-subuids 165536-231071 --add-subgids 165536-231071 {self.name})")
        return u[0], g[0], min(u[1], g[1])

    # directories put before PATH (BOOT_BUILD_PATH: e.g. another mkfs.btrfs)
    path_prefix = ""

    def argv(self, cmd, cwd, extra_env=()):
        """``cmd`` run as this user in ``cwd``: no capabilities (asserted),
        a clean environment (but QEMU_LD_PREFIX, which a dynamic binary of
        another architecture, run through binfmt, needs to find its libraries)."""
        path = f"{self.path_prefix}:{PATH}" if self.path_prefix else PATH
        env = [f"PATH={path}", f"HOME={self.home}", f"USER={self.name}",
               f"RUST_LOG={os.environ.get('RUST_LOG', '')}", "RUST_BACKTRACE=1", *extra_env]
        if os.environ.get("QEMU_LD_PREFIX"):
            env.append(f"QEMU_LD_PREFIX={os.environ['QEMU_LD_PREFIX']}")
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                "--inh-caps=-all", "env", "-i", *env, "sh", "-c", CAP_GUARD, str(cwd), *map(str, cmd)]


def read_stamp(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


@dataclass
class Rootfs:
    """A cached tree and what boots it."""
    kind: str
    tree: Path              # as made (root-owned, or the build user's subids)
    kernel: Path
    initrd: Path
    kver: str
    key: Path
    stamp: dict
    note: str
    variant: str = ""       # "" (as made) or the variants added (with_variants)


def passthrough_env():
    return [f"{k}={os.environ[k]}" for k in ("BOOT_MIRROR", "BOOT_SUITE") if os.environ.get(k)]


def debootstrap_rootfs(cache, rebuild):
    stamp = cache / "rootfs.stamp"
    if rebuild or not stamp.is_file():
        say("building the cached rootfs (debootstrap; a few minutes)")
        cache.mkdir(parents=True, exist_ok=True)
        cache.chmod(0o755)
        r = run([HELPERS / "mkrootfs.sh", cache], stdout=None, stderr=None)
        if r.returncode != 0:
            raise HarnessError("rootfs build failed (scripts/boot/mkrootfs.sh)")
    s = read_stamp(stamp)
    return Rootfs("debootstrap", cache / "rootfs", cache / "kernel/vmlinuz", cache / "kernel/initrd.img",
                  s["kernel"], cache / "key/id_ed25519", s,
                  f"{s['suite']}, kernel {s['kernel']}, built {s['built']}, "
                  f"debootstrap took {s['debootstrap_seconds']}s")


GROWROOT = HELPERS / "growroot"


def install_growroot(tree):
    """scripts/boot/growroot: the script and its oneshot unit, enabled."""
    sbin = tree / "usr/local/sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    shutil.copy(GROWROOT / "rootbox-growroot", sbin / "rootbox-growroot")
    (sbin / "rootbox-growroot").chmod(0o755)
    shutil.copy(GROWROOT / "rootbox-growroot.service", tree / "etc/systemd/system/rootbox-growroot.service")
    wants = tree / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "rootbox-growroot.service").symlink_to("/etc/systemd/system/rootbox-growroot.service")


# Tree variants: packages apt-get installs into a cached copy of the
# debootstrap tree, a function adding files to the copy, and the files
# whose content is part of the copy's stamp.
VARIANTS = {
    "nix": (("nix-bin",), None, ()),            # --nix-closure: Debian's Nix in the guest
    "grow": (("fdisk",), install_growroot,      # --grow: sfdisk, the first-boot growth unit
             (GROWROOT / "rootbox-growroot", GROWROOT / "rootbox-growroot.service")),
}


def with_variants(rootfs, cache, names):
    """The debootstrap tree with the packages of the variants ``names``
    installed by apt-get in a chroot (and their files added), cached as
    CACHE/rootfs-NAME[-NAME]; the tree itself stays as it is, so its cache
    and every copy of it stay valid."""
    if not names:
        return rootfs
    names = sorted(set(names))
    variant = "-".join(names)
    packages = [p for n in names for p in VARIANTS[n][0]]
    extras = [VARIANTS[n][1] for n in names if VARIANTS[n][1]]
    files = [f for n in names for f in VARIANTS[n][2]]
    dst = cache / f"rootfs-{variant}"
    built = f"{rootfs.stamp['built']}+{'+'.join(packages)}"
    if files:
        built += "+" + hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()[:12]

    def prepare(tmp):
        resolv = tmp / "etc/resolv.conf"
        saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
        shutil.copy("/etc/resolv.conf", resolv)
        run(["mount", "-t", "proc", "proc", tmp / "proc"], check=True, what="mount proc in the chroot")
        env = ["env", "-i", f"PATH={PATH}", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]
        log = cache / f"apt-{variant}.log"
        try:
            with open(log, "w") as f:
                for cmd in (["apt-get", "update"],
                            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
                            ["apt-get", "clean"]):
                    r = run(["chroot", tmp, *env, *cmd], stdout=f, stderr=subprocess.STDOUT)
                    if r.returncode != 0:
                        raise HarnessError(f"chroot {tmp} {' '.join(cmd)} failed (log: {log}):\n{tail(log, 20)}")
        finally:
            run(["umount", tmp / "proc"])
        if saved is None:
            resolv.unlink()
        else:
            resolv.write_bytes(saved)
        run(["sh", "-c", 'rm -rf "$0"/var/lib/apt/lists/* "$0"/var/cache/apt/*.bin', tmp], check=True)
        missing = [p for p in packages if not Path(tmp / f"var/lib/dpkg/info/{p}.list").is_file()]
        if missing:
            raise HarnessError(f"apt-get install ran, but {' '.join(missing)} is not installed in {tmp}")
        for e in extras:
            e(tmp)

    cached_copy(rootfs.tree, dst, built, f"installing {' '.join(packages)} into a copy of the rootfs "
                "(apt-get in a chroot; a few minutes)", prepare)
    return dataclasses.replace(rootfs, tree=dst, stamp={**rootfs.stamp, "built": built}, variant=variant,
                               note=f"{rootfs.note}; + {' '.join(packages)} (apt-get in a chroot)")


def initrd_modules_missing(initrd, modules):
    r = run(["lsinitramfs", initrd])
    if r.returncode != 0:
        raise HarnessError(f"cannot list {initrd}: {r.stderr.strip()}")
    names = {line.rsplit("/", 1)[-1] for line in r.stdout.splitlines()}
    return [m for m in modules if m not in names]


def mmdebstrap_rootfs(cache, user, label, rebuild):
    """`mmdebstrap --mode=unshare` run AS the build user: the tree is owned by
    its subordinate ids (root = the range's first id); cached in
    CACHE/mmdebstrap (rootfs/, kernel/, rootfs.stamp)."""
    mm = cache / "mmdebstrap"
    key = cache / "key/id_ed25519"
    stamp = mm / "rootfs.stamp"
    if rebuild or not stamp.is_file():
        (cache / "key").mkdir(parents=True, exist_ok=True)
        cache.chmod(0o755)
        if not key.is_file() or key.stat().st_size == 0:
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rootbox-boot-test", "-f", key],
                check=True, what="ssh-keygen")
        user.subids()   # says how to add a range when there is none
        if not shutil.which("mmdebstrap"):
            raise HarnessError("missing mmdebstrap (apt-get install mmdebstrap)")
        stamp.unlink(missing_ok=True)
        for d in ("rootfs", "rootfs.tmp", "kernel"):
            rmtree(mm / d)
        mm.mkdir(parents=True, exist_ok=True)
        os.chown(mm, user.uid, user.gid)
        mm.chmod(0o755)
        say(f"building the cached rootfs with mmdebstrap --mode=unshare as {user.name} (a few minutes)")
        log = mm / "mmdebstrap.log"
        t0 = os.times().elapsed
        r = run(user.argv([HELPERS / "mkrootfs-mmdebstrap.sh", mm / "rootfs.tmp",
                           Path(f"{key}.pub").read_text().strip(), label], mm, passthrough_env()),
                stdout=log, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError(f"mmdebstrap failed (log: {log}):\n{tail(log, 30)}")
        secs = int(os.times().elapsed - t0)
        tmp = mm / "rootfs.tmp"
        kv = sorted(os.listdir(tmp / "lib/modules"), key=version_key)[-1]
        (mm / "kernel").mkdir(exist_ok=True)
        try:
            shutil.copy(tmp / f"boot/vmlinuz-{kv}", mm / "kernel/vmlinuz")
            shutil.copy(tmp / f"boot/initrd.img-{kv}", mm / "kernel/initrd.img")
        except OSError as e:
            raise HarnessError(f"no kernel/initrd in the mmdebstrap tree: {e}") from None
        missing = initrd_modules_missing(mm / "kernel/initrd.img", ["btrfs.ko", "virtio_blk.ko", "virtio_pci.ko"])
        if missing:
            raise HarnessError(f"mmdebstrap initrd lacks {' '.join(missing)}")
        tmp.rename(mm / "rootfs")
        suite = os.environ.get("BOOT_SUITE", "bookworm")
        stamp.write_text(f"suite={suite}\nkernel={kv}\nmmdebstrap_seconds={secs}\nbuilt={now_iso()}\n")
        say(f"mmdebstrap tree ready in {secs}s")
    s = read_stamp(stamp)
    root_uid = (mm / "rootfs/etc/shadow").stat().st_uid
    return Rootfs("mmdebstrap", mm / "rootfs", mm / "kernel/vmlinuz", mm / "kernel/initrd.img",
                  s["kernel"], key, s,
                  f"{s['suite']}, kernel {s['kernel']}, built {s['built']}, mmdebstrap --mode=unshare "
                  f"as {user.name} took {s['mmdebstrap_seconds']}s; root of the tree is host uid {root_uid}")


def version_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def rmtree(p):
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def cached_copy(src, dst, stamp_text, what, prepare):
    """``dst``: a copy of ``src`` (reflinked where it can be) made ready by
    ``prepare(tmp)``, remade when its stamp is not ``stamp_text``."""
    stamp = Path(f"{dst}.stamp")
    if stamp.is_file() and stamp.read_text().strip() == stamp_text:
        return dst
    say(what)
    tmp = Path(f"{dst}.tmp")
    stamp.unlink(missing_ok=True)
    rmtree(dst)
    rmtree(tmp)
    run(["cp", "-a", "--reflink=auto", src, tmp], check=True, what=f"copying {src}")
    prepare(tmp)
    tmp.rename(dst)
    stamp.write_text(stamp_text + "\n")
    return dst


def fstab_text(layout, label):
    text = (HELPERS / layout.fstab).read_text() + "".join(f"{l}\n" for l in layout.fstab_extra)
    return text.replace("@LABEL@", label)


def fstab_digest(layout, label):
    """Part of a cached copy's stamp: a changed template remakes the copy."""
    return hashlib.sha256(fstab_text(layout, label).encode()).hexdigest()[:12]


def apply_layout(tree, layout, label):
    """Give the tree the layout's fstab (the one mkrootfs.sh or customize.sh
    wrote may be older); writing in place keeps the file's owner."""
    with open(tree / "etc/fstab", "w") as f:
        f.write(fstab_text(layout, label))


def hand_over(rootfs, cache, user, mode, layout, label):
    """A copy of the debootstrap tree handed to the build user, cached per
    mode, uid, layout and rootfs build.

    chown: every owner collapses to the user (what a rootless user has after
    populating a rootfs as themselves); subid: owners shifted into the
    user's subordinate range (what mmdebstrap --mode=unshare leaves)."""
    sfx = "" if layout.name == "default" else f"-{layout.name}"
    var = f"+{rootfs.variant}" if rootfs.variant else ""
    dst = cache / f"rootfs-owned-{mode}-{user.uid}{var}{sfx}"
    stamp = f"{rootfs.stamp['built']} {mode} {user.uid}:{user.gid} {layout.name} {fstab_digest(layout, label)}"
    if mode == "subid":
        su, sg, count = user.subids()
        stamp += f" {su} {sg} {count}"

    def prepare(tmp):
        # a rootless population cannot mknod; /dev is a devtmpfs at boot anyway
        run(["find", tmp, "-xdev", "(", "-type", "c", "-o", "-type", "b", ")", "-delete"], check=True)
        apply_layout(tmp, layout, label)
        if mode == "chown":
            # chown(2) clears setuid/setgid bits; a rootless population keeps
            # them (mode bits are the user's to set), so put them back.
            suid = run(["find", ".", "-xdev", "-type", "f", "-perm", "/6000", "-printf", r"%m %p\n"],
                       cwd=tmp, check=True).stdout.splitlines()
            run(["chown", "-hR", f"{user.uid}:{user.gid}", tmp], check=True, what="chown")
            for line in suid:
                m, p = line.split(" ", 1)
                os.chmod(tmp / p, int(m, 8))
        else:
            run(["/usr/bin/python3", HELPERS / "shift-owners.py", tmp, user.uid, user.gid, su, sg, count],
                stdout=None, stderr=None, check=True, what="shifting owners")

    cached_copy(rootfs.tree, dst, stamp,
                f"handing a copy of the rootfs to {user.name} ({user.uid}:{user.gid}) by {mode}", prepare)
    if mode == "chown":
        test = ["(", "!", "-uid", str(user.uid), "-o", "!", "-gid", str(user.gid), ")"]
    else:
        test = ["(", "-uid", "0", "-o", "-gid", "0", ")"]
    other = run(["find", dst, "-xdev", *test, "-print", "-quit"], check=True).stdout.strip()
    if other:
        raise HarnessError(f"{dst} was not handed over ({mode}) completely: {other}")
    return dst


def mmdebstrap_tree(rootfs, cache, user, layout, label, ids, rootbox):
    """The mmdebstrap tree (already the build user's) for ``layout``;
    ``ids`` renumber: a copy renumbered into rootbox's subid convention
    inside `rootbox run --map subid`."""
    mm = cache / "mmdebstrap"
    tree = rootfs.tree
    built = rootfs.stamp["built"]
    if (tree / "etc/fstab").read_text() != fstab_text(layout, label):
        tree = cached_copy(tree, mm / f"rootfs-{layout.name}", f"{built} {layout.name} {fstab_digest(layout, label)}",
                           f"copying the mmdebstrap tree for the fstab of --layout {layout.name}",
                           lambda tmp: apply_layout(tmp, layout, label))
    if ids == "renumber":
        sfx = "" if layout.name == "default" else f"-{layout.name}"

        def renumber(tmp):
            run(user.argv([rootbox, "run", "--map", "subid", "--", "/usr/bin/python3",
                           HELPERS / "mmdebstrap-to-rootbox-ids.py", tmp], "/"),
                stdout=None, stderr=None, check=True, what="renumbering")

        tree = cached_copy(tree, mm / f"rootfs-renumbered{sfx}", f"{built} {layout.name} renumber",
                           f"renumbering a copy of the mmdebstrap tree into rootbox's subid convention (as {user.name})",
                           renumber)
    return tree


@dataclass
class Builder:
    """One way of making an image file from a tree, run as the build user."""
    name: str
    argv: list = field(default_factory=list)   # with {out} for the image path

    def build(self, user, workdir, out, log):
        cmd = [str(out) if a == "{out}" else a for a in self.argv]
        r = run(user.argv(cmd, workdir / "out"), stdout=log, stderr=subprocess.STDOUT)
        return r.returncode == 0 and out.is_file() and out.stat().st_size > 0


def size_to_mib(v):
    v = str(v)
    if v[-1:] in "Gg":
        return int(v[:-1]) * 1024
    if v[-1:] in "Mm":
        return int(v[:-1])
    return int(v)


def rootbox_build(rootbox, tree, map_args, extra, layout, label, headroom):
    """`rootbox build`: the real thing."""
    return [rootbox, "build", "--rootfs", tree, *map_args, *extra, *layout.subvol_args(),
            "--label", label, "--size", "auto", "--headroom", headroom, "-o", "{out}"]


def unshare_build(tree, workdir, label, headroom, subids):
    """Stand-in for `rootbox build`: a user namespace mapping the caller to
    0 (and with ``subids`` its range to 1…N), staged subvolume dirs,
    mkfs.btrfs --rootdir."""
    m = ["--map-root-user"]
    if subids:
        su, sg, count = subids
        m = ["--map-user=0", "--map-group=0", f"--map-users={su},1,{count}", f"--map-groups={sg},1,{count}"]
    return ["unshare", "--user", *m, HELPERS / "stage-mkfs.sh", tree, workdir / "out/stage-unshare",
            "{out}", label, size_to_mib(headroom)]


def contrast_build(tree, workdir, label, headroom, layout=None):
    """The old, broken way: the same staging and mkfs, no namespace, so
    the files keep the build user's uid.  ext4: plain `mkfs.ext4 -d` of the
    tree (what nixpkgs' make-ext4-fs.nix runs, there under fakeroot), sized
    as stage-mkfs.sh sizes its image."""
    if layout is not None and layout.fstype == "ext4":
        used = int(run(["du", "-sxm", tree], check=True).stdout.split()[0])
        size = used * 13 // 10 + size_to_mib(headroom) + 64
        return ["mkfs.ext4", "-q", "-F", "-L", label, "-d", tree, "{out}", f"{size}M"]
    return [HELPERS / "stage-mkfs.sh", tree, workdir / "out/stage-contrast", "{out}", label, size_to_mib(headroom)]


def capeff_from_log(log):
    """CapEff the build ran with, from CAP_GUARD's line in its log."""
    try:
        for line in Path(log).read_text(errors="replace").splitlines():
            if line.startswith("[as-builder] "):
                return line.rsplit("CapEff=", 1)[-1]
    except OSError:
        pass
    return None
