"""The initrd of the arm64 boots, made on the host: nothing runs emulated.

Debian's initramfs-tools would run one emulated ``modprobe`` per module
under qemu-user (14 minutes for one ``mkinitramfs`` here), so the arm64
tree has none, and this module writes a small one instead: a static arm64
busybox (Debian ``busybox-static``, extracted, not installed), the modules
the root needs with everything they depend on (from the tree's own
``modules.dep``, ``modules.builtin`` and ``modules.alias``), and
``scripts/boot/initrd/init``, which loads them in order, finds root= and
mounts it with rootflags=.  The archive is a newc cpio written here (so it
can hold ``/dev/console`` without mknod, and every header is the same on
every run), gzip-compressed.
"""
import gzip
import lzma
import stat
import subprocess
from pathlib import Path

from .proc import HarnessError

HELPERS = Path(__file__).resolve().parent.parent          # scripts/boot
INIT = HELPERS / "initrd/init"
# the root device (virtio disk on PCI) and its filesystem
MODULES = ("virtio_pci", "virtio_blk", "btrfs")
# requested by name at load time (libcrc32c asks the crypto API for
# "crc32c"): with no modprobe in the initrd, its provider must be loaded first
ALIASES = ("crypto-crc32c",)


def modname(path):
    """The module name of a modules.dep path (kernel/fs/btrfs/btrfs.ko.xz → btrfs)."""
    name = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
    return name.replace("-", "_")


class Modules:
    """A kernel's module index, read from /lib/modules/KVER of a tree."""

    def __init__(self, moddir):
        self.dir = Path(moddir)
        try:
            dep = (self.dir / "modules.dep").read_text()
            builtin = (self.dir / "modules.builtin").read_text()
            alias = (self.dir / "modules.alias").read_text()
        except OSError as e:
            raise HarnessError(f"cannot read the module index of {self.dir}: {e}") from None
        self.path, self.deps = {}, {}
        for line in dep.splitlines():
            mod, _, deps = line.partition(":")
            self.path[modname(mod)] = mod
            self.deps[modname(mod)] = [modname(d) for d in deps.split()]
        self.builtin = {modname(line) for line in builtin.split()}
        self.alias = {}
        for line in alias.splitlines():
            f = line.split()
            if len(f) == 3 and f[0] == "alias":
                self.alias.setdefault(f[1], []).append(f[2].replace("-", "_"))

    def providers(self, alias):
        """Modules that provide ``alias`` ([] when the kernel has it built in)."""
        names = self.alias.get(alias, [])
        if any(n in self.builtin for n in names):
            return []
        return [n for n in names if n in self.path]

    def load_order(self, wanted):
        """``wanted`` and everything they depend on, each after its
        dependencies; built-in ones left out."""
        order, seen = [], set()

        def visit(name, chain):
            if name in seen or name in self.builtin:
                return
            if name not in self.path:
                raise HarnessError(f"module {name} (needed by {' → '.join(chain) or 'the boot'}) is neither "
                                   f"in {self.dir}/modules.dep nor built in")
            seen.add(name)
            for d in self.deps[name]:
                visit(d, chain + [name])
            order.append(name)

        for w in wanted:
            visit(w, [])
        return order

    def ko(self, name):
        """The module's ELF bytes (decompressed: busybox insmod reads plain .ko)."""
        p = self.dir / self.path[name]
        data = p.read_bytes()
        if p.name.endswith(".ko.xz"):
            return lzma.decompress(data)
        if p.name.endswith(".ko.gz"):
            return gzip.decompress(data)
        if p.name.endswith(".ko.zst"):
            return subprocess.run(["zstd", "-dc", p], check=True, capture_output=True).stdout
        return data


class Newc:
    """A newc ("070701") cpio archive, every entry 0:0 with mtime 0."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 0

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.pad()
        self.out += data
        self.pad()

    def pad(self):
        self.out += b"\0" * (-len(self.out) % 4)

    def finish(self):
        self.add("TRAILER!!!", 0)
        return bytes(self.out)


def busybox_in(parts):
    """The static arm64 busybox in the extracted boot parts."""
    for p in ("bin/busybox", "usr/bin/busybox"):
        if (parts / p).is_file():
            return parts / p
    raise HarnessError(f"no busybox in {parts} (busybox-static:arm64 is extracted there by mkrootfs-arm64.sh)")


def make_initrd(tree, kver, parts, out):
    """Write the initrd for the kernel ``kver`` of ``tree`` to ``out``;
    returns the modules it loads, in order."""
    mods = Modules(tree / "lib/modules" / kver)
    order = mods.load_order([p for a in ALIASES for p in mods.providers(a)] + list(MODULES))
    a = Newc()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "root", "sys"):
        a.add(d, stat.S_IFDIR | 0o755)
    a.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    a.add("bin/busybox", stat.S_IFREG | 0o755, busybox_in(parts).read_bytes())
    a.add("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    a.add("init", stat.S_IFREG | 0o755, INIT.read_bytes())
    a.add("etc/rootbox-modules", stat.S_IFREG | 0o644, "".join(f"{m}\n" for m in order).encode())
    for m in order:
        a.add(f"lib/modules/{m}.ko", stat.S_IFREG | 0o644, mods.ko(m))
    out.write_bytes(gzip.compress(a.finish(), compresslevel=6, mtime=0))
    return order
