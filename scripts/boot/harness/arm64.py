"""--arch arm64: the arm64 Debian tree and the ways of booting it in
``qemu-system-aarch64 -M virt -cpu cortex-a57`` (TCG).

- :func:`arm64_rootfs` — the tree, made by ``mmdebstrap --arch=arm64``
  through binfmt emulation (scripts/boot/mkrootfs-arm64.sh: no initramfs
  generation under emulation), then natively: the first-boot growth unit,
  the kernel, and the initrd (:mod:`.initrd`), also put in the tree's /boot
  for GRUB.  Cached in CACHE/arm64.
- :class:`UBootArm64` — U-Boot (Debian ``u-boot-qemu``,
  ``qemu_arm64/u-boot.bin``) as -bios; a GPT disk laid out like nixos-sbc's
  Rockchip ones: a raw partition first (where u-boot.itb goes; zeros
  here), then a FAT with the GPT attribute "legacy BIOS bootable" (bit 2),
  then the btrfs root.  Distro boot scans only the partitions ``part list
  -bootable`` names (partition 1 when none is), so it finds
  ``extlinux/extlinux.conf`` on the FAT only through the attribute, and
  loads the kernel and initrd from it (no Debian U-Boot reads btrfs); root
  is the btrfs partition, ``rootflags=subvol=@``.
- :class:`UefiArm64` — AAVMF (Debian ``qemu-efi-aarch64``) as pflash; the
  x86 UEFI boot's disk with a standalone GRUB built from
  ``grub-efi-arm64-bin`` (arm64, extracted) at EFI/BOOT/BOOTAA64.EFI, which
  reads the kernel and initrd from /boot in @ on the btrfs root.
- :class:`DirectArm64` — qemu loads the kernel and initrd (no firmware).
"""
import gzip
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from .boot import Boot, DirectKernel, Uefi, disk_args, readable_copy
from .initrd import make_initrd
from .proc import HarnessError, run, say, tail
from .trees import HELPERS, Rootfs, install_growroot, now_iso, read_stamp, rmtree, version_key

KERNEL_ARGS = "rw console=ttyAMA0 panic=-1 systemd.journald.forward_to_console=1"
MACHINE = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg,thread=multi"]
UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
GRUB_DIR = "usr/lib/grub/arm64-efi"       # in the extracted boot parts


def arm64_rootfs(cache, label, rebuild):
    """The cached arm64 tree (CACHE/arm64: rootfs/, parts/, kernel/,
    rootfs.stamp); made when missing or ``rebuild``.  The emulated step's
    result is kept apart (mmdebstrap.stamp), so a failure in a native step
    after it does not cost another emulated bootstrap."""
    a = cache / "arm64"
    stamp, mm_stamp, tmp = a / "rootfs.stamp", a / "mmdebstrap.stamp", a / "rootfs.tmp"
    key = cache / "key/id_ed25519"
    if rebuild or not stamp.is_file():
        stamp.unlink(missing_ok=True)
        a.mkdir(parents=True, exist_ok=True)
        cache.chmod(0o755)
        if rebuild or not mm_stamp.is_file() or not tmp.is_dir():
            mm_stamp.unlink(missing_ok=True)
            (cache / "key").mkdir(exist_ok=True)
            if not key.is_file() or key.stat().st_size == 0:
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rootbox-boot-test", "-f", key],
                    check=True, what="ssh-keygen")
            for d in ("rootfs", "rootfs.tmp", "parts", "kernel"):
                rmtree(a / d)
            say("building the arm64 tree: mmdebstrap --arch=arm64 through qemu-user (minutes)")
            log = a / "mmdebstrap.log"
            r = run([HELPERS / "mkrootfs-arm64.sh", tmp, a / "parts", Path(f"{key}.pub").read_text().strip(),
                     label], stdout=subprocess.PIPE, stderr=log)
            if r.returncode != 0:
                raise HarnessError(f"mkrootfs-arm64.sh failed (log: {log}):\n{tail(log, 30)}")
            mm_stamp.write_text(f"mmdebstrap_seconds={r.stdout.split()[-1]}\n")
        t0 = os.times().elapsed
        kv = sorted(os.listdir(tmp / "lib/modules"), key=version_key)[-1]
        install_growroot(tmp)
        k = a / "kernel"
        rmtree(k)
        k.mkdir()
        shutil.copy(tmp / f"boot/vmlinuz-{kv}", k / "vmlinuz")
        # U-Boot's booti takes an uncompressed Image; Debian's vmlinuz is gzip
        raw = (k / "vmlinuz").read_bytes()
        (k / "Image").write_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        mods = make_initrd(tmp, kv, a / "parts", k / "initrd.img")
        # GRUB (the UEFI boot) reads the initrd from /boot in @, as the tree
        # would have it had initramfs-tools made one
        shutil.copy(k / "initrd.img", tmp / f"boot/initrd.img-{kv}")
        secs = f"{os.times().elapsed - t0:.1f}"
        rmtree(a / "rootfs")
        tmp.rename(a / "rootfs")
        mm = read_stamp(mm_stamp)
        suite = os.environ.get("BOOT_SUITE", "bookworm")
        stamp.write_text(f"suite={suite}\nkernel={kv}\nmmdebstrap_seconds={mm['mmdebstrap_seconds']}\n"
                         f"native_seconds={secs}\nmodules={' '.join(mods)}\nbuilt={now_iso()}\n")
        say(f"arm64 tree ready: emulated mmdebstrap {mm['mmdebstrap_seconds']}s, then natively "
            f"growroot, kernel and initrd ({len(mods)} modules) in {secs}s")
    s = read_stamp(stamp)
    return Rootfs("mmdebstrap-arm64", a / "rootfs", a / "kernel/Image", a / "kernel/initrd.img", s["kernel"], key,
                  s, f"{s['suite']} arm64, kernel {s['kernel']}, built {s['built']}; emulated mmdebstrap took "
                  f"{s['mmdebstrap_seconds']}s, the native growroot/kernel/initrd {s['native_seconds']}s; "
                  f"initrd modules: {s['modules']}", variant="arm64")


class Arm64:
    """What every arm64 boot shares: qemu's machine."""

    def machine(self, accel):
        if accel != "tcg":
            raise HarnessError(f"--arch arm64 runs under TCG only (BOOT_ACCEL={accel})")
        return list(MACHINE)


@dataclass
class DirectArm64(Arm64, DirectKernel):
    name = "direct"


@dataclass
class UBootArm64(Arm64, Boot):
    """U-Boot's distro boot: extlinux.conf on a legacy-bootable FAT (GPT)."""
    kernel: Path            # an uncompressed arm64 Image
    initrd: Path
    layout: object
    name = "uboot"
    partitioned = True

    def disk_spec(self, root_content, d):
        missing = self.missing([UBOOT_BIN])
        if missing:
            raise HarnessError(f"--arch arm64 --boot uboot needs {', '.join(missing)} "
                               "(apt-get install u-boot-qemu mtools dosfstools)")
        partuuid = self.root_partuuid = str(uuid.uuid4())
        fat = d / "boot"
        conf = fat / "extlinux/extlinux.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "# scripts/boot-test --arch arm64 --boot uboot\n"
            "default rootbox-boot-test\n"
            "label rootbox-boot-test\n"
            "    kernel /Image\n"
            "    initrd /initrd.img\n"
            f"    append {self.layout.root_args('PARTUUID=' + partuuid)} {KERNEL_ARGS}\n")
        conf.chmod(0o644)
        readable_copy(self.kernel, fat / "Image")
        readable_copy(self.initrd, fat / "initrd.img")
        firmware = d / "firmware.bin"
        firmware.write_bytes(bytes(1 << 20))
        firmware.chmod(0o644)
        return {"table": "gpt", "partitions": [
            {"name": "firmware", "type": "linux", "content": {"raw": str(firmware)}},
            {"name": "boot", "type": "fat32", "attributes": ["legacy-bootable"],
             "content": {"fat": {"dir": str(fat), "label": "BOOT"}}},
            {"name": "root", "type": "root-arm64", "guid": partuuid, "content": root_content}]}

    def qemu_args(self, image, d):
        return self.disk_args(image, d)

    def disk_args(self, disk, d):
        return ["-bios", str(UBOOT_BIN), *disk_args(disk)]

    def path_check(self, console):
        lines = [l for l in console.splitlines()
                 if l.startswith("U-Boot ") or "Scanning virtio" in l or "extlinux.conf" in l
                 or "Kernel command line:" in l]
        # distro boot scanned the legacy-bootable FAT (partition 2) and not
        # partition 1, its fallback when no partition is marked; the kernel
        # got the root partition's PARTUUID of the --json report
        ok = (any("Scanning virtio 0:2" in l for l in lines)
              and not any("Scanning virtio 0:1" in l for l in lines)
              and any("Found /extlinux/extlinux.conf" in l for l in lines)
              and any("Kernel command line:" in l and f"root=PARTUUID={self.root_partuuid or ''}" in l
                      for l in lines))
        return ok, "\n".join(lines[:6]) or "no U-Boot or kernel line on the console"

    def describe(self):
        return f"U-Boot ({UBOOT_BIN}, extlinux.conf on a legacy-bootable FAT)"


@dataclass
class UefiArm64(Arm64, Uefi):
    """AAVMF + a standalone arm64 GRUB on the ESP reading /boot from @."""
    parts: Path = Path("/nonexistent")     # the extracted grub-efi-arm64-bin

    def disk_spec(self, root_content, d):
        grub = self.parts / GRUB_DIR
        missing = self.missing([AAVMF_CODE, AAVMF_VARS, grub / "btrfs.mod"])
        if missing:
            raise HarnessError(f"--arch arm64 --boot uefi needs {', '.join(missing)} "
                               "(apt-get install qemu-efi-aarch64 grub-common mtools dosfstools; "
                               "the arm64 GRUB modules come with the arm64 tree)")
        partuuid = self.root_partuuid = str(uuid.uuid4())
        cfg = d / "grub.cfg"
        # GRUB's btrfs reads paths from the top-level subvolume: /@/boot/...
        # gzio: Debian's arm64 vmlinuz is gzip-compressed
        cfg.write_text(
            "set timeout=0\n"
            f"search --no-floppy --label {self.label} --set=root\n"
            "echo \"rootbox boot test: GRUB found $root\"\n"
            f"linux /@/boot/vmlinuz-{self.kver} {self.layout.root_args('PARTUUID=' + partuuid)} {KERNEL_ARGS}\n"
            f"initrd /@/boot/initrd.img-{self.kver}\n"
            "boot\n")
        esp = d / "esp"
        efi = esp / "EFI/BOOT/BOOTAA64.EFI"
        efi.parent.mkdir(parents=True, exist_ok=True)
        run(["grub-mkstandalone", "-O", "arm64-efi", "-d", grub, "--modules=part_gpt btrfs gzio",
             "--locales=", "--fonts=", "--themes=", "-o", efi, f"boot/grub/grub.cfg={cfg}"],
            check=True, what="grub-mkstandalone -O arm64-efi")
        efi.chmod(0o644)
        return {"table": "gpt", "partitions": [
            {"name": "ESP", "type": "esp", "content": {"fat": {"dir": str(esp), "label": "ESP"}}},
            {"name": "root", "type": "root-arm64", "guid": partuuid, "content": root_content}]}

    def disk_args(self, disk, d):
        vars_ = d / "AAVMF_VARS.fd"
        shutil.copy(AAVMF_VARS, vars_)
        return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_}", *disk_args(disk)]

    def describe(self):
        return f"UEFI (AAVMF {AAVMF_CODE.name}, arm64 GRUB from the ESP, kernel {self.kver} from @/boot)"

