"""Unit tests of the harness's pure parts and of its disk assembly (real
sfdisk, mkfs.vfat and mtools on files; no root needed).

    python3 -B -m unittest discover -s scripts/boot/harness -t scripts/boot
"""
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import checks as C
from harness.boot import GPT_ESP, GPT_ROOT_X86_64, Partition, UBoot, Uefi, assemble_disk, make_fat
from harness.trees import EXT4, LAYOUTS, contrast_build


def result(name, observed, alice_ok=False, checks=C.CHECKS):
    r = C.ImageResult(name, C.expectations(checks, alice_ok)[name], checks)
    for c in checks:
        r.set(c, observed.get(c, True))
    return r


class Verdicts(unittest.TestCase):
    def test_rootbox_passes_with_alice_as_expected_failure(self):
        r = result("rootbox", {"ssh-alice": False})
        self.assertEqual(r.status("ssh-alice"), "XFAIL")
        self.assertTrue(r.verdict()[0])

    def test_rootbox_fails_when_alice_must_log_in_and_does_not(self):
        r = result("rootbox", {"ssh-alice": False}, alice_ok=True)
        self.assertEqual(r.status("ssh-alice"), "FAIL")
        self.assertEqual(r.verdict(), (False, "FAIL (ssh-alice)"))

    def test_rootbox_fails_on_any_failed_or_skipped_check(self):
        for c in C.CHECKS:
            for bad in (False, None):
                if c == "ssh-alice" and bad is False:
                    continue   # XFAIL
                with self.subTest(check=c, observed=bad):
                    self.assertFalse(result("rootbox", {c: bad}).verdict()[0])

    def test_contrast_must_fail_something_and_must_build(self):
        self.assertFalse(result("contrast", {}).verdict()[0])
        self.assertTrue(result("contrast", {"journal": False}).verdict()[0])
        self.assertFalse(result("contrast", {"build": False, "sshd": None}).verdict()[0])

    def test_single_is_refused_or_boots_collapsed(self):
        deep = C.CHECKS + (C.DEEP,)
        ok = result("single", {"ssh-alice": False, "journal": False}, True, deep)
        self.assertTrue(ok.verdict()[0])
        self.assertFalse(result("single", {C.DEEP: False}, True, deep).verdict()[0])
        refused = result("single", {}, True, deep)
        refused.set("build", False, "rootbox: cannot read /x: Permission denied")
        self.assertTrue(refused.verdict()[0])
        broken = result("single", {}, True, deep)
        broken.set("build", False, "mkfs.btrfs: no space left")
        self.assertFalse(broken.verdict()[0])


class GuestOutput(unittest.TestCase):
    def test_mounts_want_each_subvolume_where_fstab_puts_it(self):
        lay = LAYOUTS["default"]
        good = ["/ /dev/vda[/@] /@ btrfs rw", "/home /dev/vda[/@home] /@home btrfs rw",
                "/var/log /dev/vda[/@log] /@log btrfs rw", "/srv /dev/vda[/@srv] /@srv btrfs rw"]
        r = result("rootbox", {})
        C.check_mounts(r, lay, {"mounts": good, "marker": ["rootbox boot test"]})
        self.assertEqual(r.status("mounts"), "PASS")
        C.check_mounts(r, lay, {"mounts": good[:1] + ["/home NOT-MOUNTED"] + good[2:],
                                "marker": ["rootbox boot test"]})
        self.assertIn("/home(want /@home)", r.evidence("mounts"))
        C.check_mounts(r, lay, {"mounts": good, "marker": ["cat: /srv/rootbox-marker: No such file"]})
        self.assertEqual(r.status("mounts"), "FAIL")

    def test_impermanence_wants_a_tmpfs_root(self):
        r = result("rootbox", {})
        lines = ["/ rootfs / btrfs rw"] + [f"{mp} /dev/vda[{fs}] {fs} btrfs rw"
                                           for mp, fs in LAYOUTS["impermanence"].mounts()[1:]]
        C.check_mounts(r, LAYOUTS["impermanence"], {"mounts": lines, "marker": ["rootbox boot test"]})
        self.assertIn("/(want tmpfs)", r.evidence("mounts"))

    def test_ext4_wants_one_ext4_root_and_the_marker(self):
        r = result("rootbox", {})
        C.check_mounts(r, EXT4, {"mounts": ["/ /dev/vda / ext4 rw,relatime"], "marker": ["rootbox boot test"]})
        self.assertEqual(r.status("mounts"), "PASS")
        # a btrfs root (or the subvolume's FSROOT) is not the ext4 image
        C.check_mounts(r, EXT4, {"mounts": ["/ /dev/vda[/@] /@ btrfs rw"], "marker": ["rootbox boot test"]})
        self.assertIn("/(want /)", r.evidence("mounts"))
        C.check_mounts(r, EXT4, {"mounts": ["/ /dev/vda / ext4 rw"], "marker": []})
        self.assertEqual(r.status("mounts"), "FAIL")
        # and a btrfs layout does not take an ext4 root
        C.check_mounts(r, LAYOUTS["default"], {"mounts": ["/ /dev/vda /@ ext4 rw"], "marker": ["rootbox boot test"]})
        self.assertIn("/(want /@)", r.evidence("mounts"))

    def test_ext4_builds_and_boots_without_subvolumes(self):
        self.assertEqual(EXT4.subvol_args(), ["--filesystem", "ext4"])
        self.assertEqual(EXT4.root_args("LABEL=x"), "root=LABEL=x rootfstype=ext4")
        self.assertFalse(EXT4.tmpfs_root)
        self.assertTrue(LAYOUTS["impermanence"].tmpfs_root)
        self.assertNotIn("--filesystem", LAYOUTS["default"].subvol_args())
        tree = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tree)
        argv = contrast_build(tree, tree, "lbl", "512M", EXT4)
        self.assertEqual(argv[:6], ["mkfs.ext4", "-q", "-F", "-L", "lbl", "-d"])
        self.assertTrue(argv[-1].endswith("M") and int(argv[-1][:-1]) >= 576)
        self.assertNotEqual(contrast_build(tree, tree, "lbl", "512M")[0], "mkfs.ext4")

    def test_owners_want_root_and_alice_as_expected(self):
        r = result("rootbox", {}, alice_ok=True)
        C.check_owners(r, ["0:0 755 /", "1000:1000 700 /home/alice"], "")
        self.assertEqual(r.status("owners"), "PASS")
        C.check_owners(r, ["1001:1001 755 /", "1000:1000 700 /home/alice"], "")
        self.assertIn("/=1001:1001(want 0:0)", r.evidence("owners"))
        C.check_owners(r, [], "")
        self.assertEqual(r.status("owners"), "FAIL")

    def test_journal_counts_a_line_seen_twice_once(self):
        r = result("rootbox", {})
        C.check_journal(r, {"journal": ["[    5.1] sshd[1]: Authentication refused: bad ownership or modes"]},
                        "[    5.100000] sshd[1]: Authentication refused: bad ownership or modes\nok\n")
        self.assertEqual(r.status("journal"), "FAIL")
        self.assertEqual(len(r.evidence("journal").splitlines()), 1)
        C.check_journal(r, {}, "all fine\n")
        self.assertEqual(r.status("journal"), "PASS")

    def test_sections_split_the_guest_output(self):
        self.assertEqual(C.sections("x\n### state\nrunning\n### failed\n### end\n"),
                         {"state": ["running"], "failed": [], "end": []})


class FirmwarePath(unittest.TestCase):
    KV = "6.1.0-50-amd64"

    def test_uefi_needs_grub_and_the_kernel_it_loaded_from_at(self):
        u = Uefi(self.KV, LAYOUTS["default"], "rootbox-boot")
        grub = "rootbox boot test: GRUB found hd0,gpt2"
        kernel = f"[    0.000000] Command line: BOOT_IMAGE=/@/boot/vmlinuz-{self.KV} root=PARTUUID=x"
        self.assertTrue(u.path_check(f"{grub}\n{kernel}\n")[0])
        self.assertFalse(u.path_check(f"{kernel}\n")[0])
        self.assertFalse(u.path_check("[    0.000000] Command line: root=LABEL=rootbox-boot\n")[0])

    def test_uboot_needs_its_script_and_a_partuuid_root(self):
        b = UBoot(Path("vmlinuz"), Path("initrd.img"), LAYOUTS["default"])
        ok = ("U-Boot 2023.01\nrootbox boot test: U-Boot runs boot.scr\n"
              "[    0.000000] Command line: root=PARTUUID=3c42a6a4-02 rw\n")
        self.assertTrue(b.path_check(ok)[0])
        self.assertFalse(b.path_check("U-Boot 2023.01\n[    0.000000] Command line: root=PARTUUID=3c42a6a4-02\n")[0])


@unittest.skipUnless(all(shutil.which(t) for t in ("sfdisk", "mkfs.vfat", "mcopy")), "needs sfdisk, dosfstools, mtools")
class Disks(unittest.TestCase):
    def setUp(self):
        self.d = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.d)

    def test_gpt_disk_has_the_partitions_and_their_contents(self):
        a, b = self.d / "a.img", self.d / "b.img"
        a.write_bytes(b"A" * 1000)
        b.write_bytes(b"B" * (3 << 20))
        disk = self.d / "disk.img"
        starts = assemble_disk(disk, "gpt", [Partition(a, GPT_ESP, "11111111-2222-3333-4444-555555555555", "ESP"),
                                             Partition(b, GPT_ROOT_X86_64, "66666666-7777-8888-9999-000000000000")])
        dump = subprocess.run(["sfdisk", "-d", disk], capture_output=True, text=True, check=True).stdout
        self.assertIn("uuid=11111111-2222-3333-4444-555555555555", dump)
        self.assertIn(f"type={GPT_ROOT_X86_64}", dump)
        self.assertEqual(starts, [1 << 20, 2 << 20])
        with open(disk, "rb") as f:
            f.seek(starts[0])
            self.assertEqual(f.read(1000), b"A" * 1000)
            f.seek(starts[1])
            self.assertEqual(f.read(3 << 20), b"B" * (3 << 20))

    def test_fat_holds_the_files_at_their_paths(self):
        src = self.d / "grub.efi"
        src.write_bytes(b"MZ" + b"\0" * 100)
        fat = self.d / "esp.img"
        make_fat(fat, {"/EFI/BOOT/BOOTX64.EFI": src}, "ESP")
        out = subprocess.run(["mtype", "-i", fat, "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True, check=True).stdout
        self.assertEqual(out, src.read_bytes())


if __name__ == "__main__":
    unittest.main()
