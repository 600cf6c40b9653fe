"""--from-definitions: the UEFI boot's disk from systemd-repart definitions.

The same disk as :class:`harness.boot.Uefi` makes from a rootbox disk spec
(an ESP holding the standalone GRUB, a btrfs root with the layout's
subvolumes, root=PARTUUID=…), declared instead as repart.d files
(repart.d(5), systemd 262) and made by ``rootbox disk --definitions DIR
--copy-source SRC``, so the boot checks rootbox's translation of the keys
an image.repart / mkosi user writes.

Every key is repart's own: ``Type=``, ``Label=`` (the PARTLABEL and the
filesystem label GRUB searches for), ``UUID=`` (the root PARTUUID GRUB's
grub.cfg names before the disk exists), ``Format=vfat``/``btrfs``,
``CopyFiles=``, ``Subvolumes=``, ``MakeDirectories=``,
``DefaultSubvolume=``, ``ExcludeFiles=``, ``SizeMinBytes=``/
``SizeMaxBytes=``.  No ``X-Rootbox-`` key is needed: the tree's owners
come from the build user's map (``--map``, as for the spec), and the
disk-level choices (GPT, 1 MiB alignment) are rootbox's defaults.

The copy source SRC holds ``esp/`` (the ESP tree) and ``root/``, a
read-only bind mount of the staged Debian tree (the cached tree is not
touched; the mount is gone when :func:`copy_source` returns).  So the root
partition's ``CopyFiles=`` name ``/root`` and ``/root/home`` …, and
repart's ``ExcludeFiles=`` leave each inner subvolume's mount point empty
in the outer one.
"""
import contextlib

from .boot import run_rootbox_disk
from .proc import HarnessError, run

# The ESP as the spec boot makes it: FAT, 64 MiB (the disk --example uefi
# size), labelled ESP.
ESP_BYTES = 64 << 20


def definitions(layout, label, partuuid):
    """{file name: text}: the repart.d files of the UEFI boot's disk for
    ``layout`` (its subvolumes, @ the default), the root labelled
    ``label`` with the GUID ``partuuid``; CopyFiles= sources are below the
    copy source of :func:`copy_source`."""
    if not layout.has_root_subvol or layout.fstype != "btrfs":
        raise HarnessError(f"--from-definitions: layout {layout.name} has no btrfs @ at / for GRUB to read")
    subvols = [(f"/{name}", "/root" + ("" if mp == "/" else mp), kind) for name, mp, kind in layout.subvols]
    default = [s for s, _, kind in subvols if kind == "default"]
    inner = [src for _, src, _ in subvols if src != "/root"]
    esp = ("# The EFI system partition: the standalone GRUB the harness made.\n"
           "[Partition]\n"
           "Type=esp\n"
           "Label=ESP\n"
           "Format=vfat\n"
           "CopyFiles=/esp:/\n"
           f"SizeMinBytes={ESP_BYTES}\n"
           f"SizeMaxBytes={ESP_BYTES}\n")
    root = ("# The root: btrfs, the staged tree split into the layout's subvolumes.\n"
            "[Partition]\n"
            "Type=root-x86-64\n"
            f"Label={label}\n"
            f"UUID={partuuid}\n"
            "Format=btrfs\n"
            + "".join(f"CopyFiles={src}:{sub}\n" for sub, src, _ in subvols)
            + "# each inner subvolume's mount point stays empty in the outer one\n"
            + "".join(f"ExcludeFiles={src}/\n" for src in inner)
            + f"Subvolumes={' '.join(s for s, _, _ in subvols)}\n"
            + "# systemd-repart 262 makes a subvolume only when its directory exists\n"
            + f"MakeDirectories={' '.join(s for s, _, _ in subvols)}\n"
            + (f"DefaultSubvolume={default[0]}\n" if default else ""))
    return {"00-esp.conf": esp, "10-root.conf": root}


@contextlib.contextmanager
def copy_source(src, tree):
    """``src`` with ``src/root`` a read-only bind mount of ``tree`` (the
    ESP tree goes to ``src/esp``); unmounted on the way out, whatever the
    way."""
    mnt = src / "root"
    mnt.mkdir(parents=True)
    run(["mount", "--bind", "-o", "ro", tree, mnt], check=True, what=f"read-only bind mount of {tree}")
    try:
        yield src
    finally:
        r = run(["umount", mnt])
        if r.returncode != 0:
            run(["umount", "--lazy", mnt], check=True, what=f"umount {mnt}")


def make_disk(boot, rootbox, user, tree, d, out, log, map_args=()):
    """The disk ``out`` of the UEFI boot ``boot`` from repart.d files
    written to ``d/repart.d``: ``rootbox disk --definitions … --copy-source
    …`` as the build user; returns its --json report (checked as the spec
    boot's)."""
    src = d / "src"
    boot.esp_tree(d, src / "esp")
    defs = d / "repart.d"
    defs.mkdir()
    files = definitions(boot.layout, boot.label, boot.root_partuuid)
    for name, text in files.items():
        (defs / name).write_text(text)
    shown = "".join(f"--- {defs / n}\n{t}" for n, t in files.items())
    with copy_source(src, tree):
        report = run_rootbox_disk(rootbox, user, ["--definitions", defs, "--copy-source", src], shown,
                                  out, log, map_args)
    return boot.took(report, out)
