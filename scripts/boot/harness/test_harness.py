"""Unit tests of the harness's pure parts and of its disk assembly (real
sfdisk, mkfs.vfat and mtools on files; no root needed).

    python3 -B -m unittest discover -s scripts/boot/harness -t scripts/boot
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import arm64 as A
from harness import checks as C
from harness import initrd as I
from harness import growth as G
from harness import nixstore as N
from harness import repart as R
from harness.boot import UBoot, Uefi, build_spec
from harness.proc import HarnessError
from harness.trees import EXT4, LAYOUTS, contrast_build


def result(name, observed, alice_ok=False, checks=C.CHECKS):
    r = C.ImageResult(name, C.expectations(checks, alice_ok)[name], checks)
    for c in checks:
        r.set(c, observed.get(c, True))
    return r


def guest(text):
    return C.sections(text)


# a build refused under --map single, as rootbox prints it
REFUSED_LOG = (" INFO staging and running /usr/sbin/mkfs.btrfs in the sandbox\n"
               "rootbox: error: staging failed: cannot read directory /w/tree/root: Permission denied "
               "(os error 13) (rootbox runs as you: make it readable to you, e.g. chmod u+rx)\n")
# `stat -c "%U:%G %a %n"` of DEEP_PATHS and `getfacl -p /var/log/journal` in a kept tree
DEEP_OK = ["root:shadow 640 /etc/shadow", "root:shadow 2755 /usr/bin/chage",
           "root:systemd-journal 2755 /var/log/journal", "_apt:root 700 /var/cache/apt/archives/partial",
           "alice:alice 700 /home/alice"]
ACL_OK = ["user::rwx", "group::r-x", "group:adm:r-x", "mask::r-x", "other::r-x"]
CLOSURE = N.Closure(Path("/x"), "/nix/store/aaa-lib", "/nix/store/bbb-data", "/nix/store/ccc-app")
NIX_OK = """### nix-before
error: path '/nix/store/ccc-app' is not valid
rc=1
### nix-load
warning: the group 'nixbld' specified in 'build-users-group' does not exist
rc=0
### nix-verify
reading the Nix store...
checking path existence...
checking link hashes...
checking store hashes...
rc=0
### nix-refs
warning: the group 'nixbld' specified in 'build-users-group' does not exist
/nix/store/bbb-data
/nix/store/aaa-lib
rc=0
### nix-valid
rc=0
### nix-run
hello from the closure
"""


class NixAndGrowth(unittest.TestCase):
    def nix(self, text, count=3):
        r = result("rootbox", {}, checks=C.CHECKS + (N.CHECK,))
        N.check(r, guest(text), CLOSURE, "/nix-path-registration", count)
        return r.status(N.CHECK), r.evidence(N.CHECK)

    def test_nix_passes_when_loaded_verified_and_referenced(self):
        self.assertEqual(self.nix(NIX_OK)[0], "PASS")

    def test_nix_fails_on_a_modified_path_a_failed_load_or_missing_references(self):
        bad = {
            "modified": NIX_OK.replace("checking store hashes...", "checking store hashes...\n"
                                       "path '/nix/store/aaa-lib' was modified! expected hash"),
            "contents not checked": NIX_OK.replace("checking store hashes...\n", ""),
            "verify exit": NIX_OK.replace("checking store hashes...\nrc=0", "checking store hashes...\nrc=1"),
            "valid before": NIX_OK.replace("is not valid\nrc=1", "is not valid\nrc=0"),
            "load": NIX_OK.replace("does not exist\nrc=0\n### nix-verify", "error: bad\nrc=1\n### nix-verify"),
            "refs": NIX_OK.replace("/nix/store/bbb-data\n/nix/store/aaa-lib\n", "/nix/store/aaa-lib\n"),
            "no shell output": "",
        }
        for why, text in bad.items():
            with self.subTest(why=why):
                self.assertEqual(self.nix(text)[0], "FAIL")
        self.assertEqual(self.nix(NIX_OK, count=2)[0], "FAIL")

    GROW_OK = """### grow-unit
active
### grow-journal
rootbox-growroot: df-before 1000000000
rootbox-growroot: df-after 2073741824
### grow-df
2073741824
### grow-gpt
EFI PART
rc=0
"""

    def grow(self, text, table="gpt", part=1048576000):
        r = result("rootbox", {}, checks=C.CHECKS + (G.CHECK,))
        G.check(r, guest(text), table, 1 << 30, part)
        return r.status(G.CHECK)

    def test_growth_passes_when_df_grew_and_the_backup_gpt_moved(self):
        self.assertEqual(self.grow(self.GROW_OK), "PASS")
        self.assertEqual(self.grow(self.GROW_OK.split("### grow-gpt")[0], table="dos"), "PASS")

    def test_growth_fails_without_growth_a_moved_header_or_an_active_unit(self):
        bad = {
            "no growth": self.GROW_OK.replace("df-after 2073741824", "df-after 1000000000"),
            "header": self.GROW_OK.replace("EFI PART", ""),
            "verify": self.GROW_OK.replace("EFI PART\nrc=0", "EFI PART\nrc=1"),
            "unit": self.GROW_OK.replace("active", "failed"),
            "df now": self.GROW_OK.replace("### grow-df\n2073741824", "### grow-df\n1000000000"),
        }
        for why, text in bad.items():
            with self.subTest(why=why):
                self.assertEqual(self.grow(text), "FAIL")
        # measured after growing: larger than the partition as built
        self.assertEqual(self.grow(self.GROW_OK, part=900000000), "FAIL")


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

    def test_contrast_must_fail_the_owners_check_and_must_build(self):
        self.assertEqual(result("contrast", {}).verdict(),
                         (False, "UNEXPECTEDLY PASSES (owners PASS) — the test cannot tell good from bad"))
        self.assertEqual(result("contrast", {"owners": False}).verdict(), (True, "FAILS as expected (owners)"))
        self.assertEqual(result("contrast", {"owners": False, "sshd": False, "journal": False}).verdict(),
                         (True, "FAILS as expected (owners; also failed: sshd journal)"))
        self.assertFalse(result("contrast", {"build": False, "sshd": None}).verdict()[0])

    def test_contrast_failing_for_another_reason_proves_nothing(self):
        # a qemu, firmware or growth problem is not the failure the contrast shows
        for other in ("sshd", "journal", "multi-user", C.FIRMWARE):
            with self.subTest(failed=other):
                r = result("contrast", {other: False}, checks=C.CHECKS + (C.FIRMWARE,))
                ok, why = r.verdict()
                self.assertFalse(ok)
                self.assertIn(f"failed instead: {other}", why)
                self.assertIn("owners PASS", why)
        # and owners not observed at all (no shell, no offline read) is no failure
        r = result("contrast", {"sshd": False, "owners": None})
        self.assertEqual(r.verdict(), (False, "fails, but not as it must (owners SKIP; failed instead: sshd) "
                                              "— another failure proves nothing"))

    def test_single_is_refused_or_boots_collapsed(self):
        deep = C.CHECKS + (C.DEEP,)
        ok = result("single", {"ssh-alice": False, "journal": False}, True, deep)
        self.assertTrue(ok.verdict()[0])
        self.assertFalse(result("single", {C.DEEP: False}, True, deep).verdict()[0])
        refused = result("single", {}, True, deep)
        refused.set("build", False, REFUSED_LOG)
        self.assertEqual(refused.verdict(), (True, "refused as expected (cannot read directory /w/tree/root)"))
        broken = result("single", {}, True, deep)
        broken.set("build", False, "mkfs.btrfs: no space left")
        self.assertFalse(broken.verdict()[0])

    def test_single_refusal_is_rootboxs_own_not_any_permission_denied(self):
        deep = C.CHECKS + (C.DEEP,)
        plan = ("rootbox: error: staging failed: cannot read /w/tree/etc/gshadow: Permission denied (os error 13) "
                "(its owner is not you and does not map into the namespace, and its mode is 640): make it "
                "readable to you (e.g. chmod o+r), or leave it out of the rootfs")
        for log in (REFUSED_LOG, plan):
            r = result("single", {}, True, deep)
            r.set("build", False, log)
            self.assertTrue(r.verdict()[0], log)
        for log in ("mkfs.btrfs: ERROR: cannot open /w/out/single.img: Permission denied",
                    "mount: /w/mnt: Permission denied",
                    "rootbox: error: cannot read /w/tree/x: Permission denied (os error 13)",
                    "rootbox: error: cannot copy /w/tree/x: Permission denied (os error 13) (its owner does "
                    "not map into the namespace, so rootbox can read it only if it is readable to you)"):
            r = result("single", {}, True, deep)
            r.set("build", False, log)
            self.assertEqual(r.verdict(), (False, "FAIL (build)"), log)


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
        C.check_journal(r, {"journal": ["[    5.1] sshd[1]: Authentication refused: bad ownership or modes"],
                            "journal-lines": ["812"]},
                        "[    5.100000] sshd[1]: Authentication refused: bad ownership or modes\nok\n")
        self.assertEqual(r.status("journal"), "FAIL")
        self.assertEqual(len(r.evidence("journal").splitlines()), 1)
        C.check_journal(r, {"journal": [], "journal-lines": ["812"]}, "all fine\n")
        self.assertEqual(r.status("journal"), "PASS")
        self.assertIn("812 lines of journalctl -b", r.evidence("journal"))

    def test_journal_needs_output_from_journalctl(self):
        r = result("rootbox", {})
        for lines in (["0"], [], ["wc: error"]):
            with self.subTest(lines=lines):
                C.check_journal(r, {"journal": [], "journal-lines": lines}, "all fine\n")
                self.assertEqual(r.status("journal"), "FAIL")
                self.assertIn("journalctl -b printed nothing", r.evidence("journal"))
        # no shell: not read, so not a pass (the rootbox image then fails)
        C.check_journal(r, {}, "all fine\n")
        self.assertEqual(r.status("journal"), "SKIP")
        self.assertFalse(r.verdict()[0])
        # the console alone can still show trouble
        C.check_journal(r, {}, "[ 3.0] sshd[1]: Authentication refused: bad ownership or modes\n")
        self.assertEqual(r.status("journal"), "FAIL")
        self.assertIn("### journal-lines", C.guest_script(LAYOUTS["default"], False))

    def test_owners_deep_passes_on_every_path_and_the_acl(self):
        deep = C.CHECKS + (C.DEEP,)
        r = result("rootbox", {}, True, deep)
        C.check_deep(r, {"deep": DEEP_OK, "acl": ACL_OK}, True)
        self.assertEqual(r.status(C.DEEP), "PASS", r.evidence(C.DEEP))
        s = result("single", {}, True, deep)
        C.check_deep(s, {"deep": [f"root:root {line.split(' ', 2)[1]} {line.split(' ', 2)[2]}" for line in DEEP_OK],
                         "acl": []}, True)
        self.assertEqual(s.status(C.DEEP), "PASS", s.evidence(C.DEEP))

    def test_owners_deep_needs_every_path_it_names(self):
        deep = C.CHECKS + (C.DEEP,)
        for i, line in enumerate(DEEP_OK):
            path = line.split(" ", 2)[2]
            with self.subTest(missing=path):
                r = result("rootbox", {}, True, deep)
                stat_err = f"stat: cannot statx '{path}': No such file or directory"
                C.check_deep(r, {"deep": DEEP_OK[:i] + [stat_err] + DEEP_OK[i + 1:], "acl": ACL_OK}, True)
                self.assertEqual(r.status(C.DEEP), "FAIL")
                self.assertIn(stat_err, r.evidence(C.DEEP))
                r = result("rootbox", {}, True, deep)
                C.check_deep(r, {"deep": DEEP_OK[:i] + DEEP_OK[i + 1:], "acl": ACL_OK}, True)
                self.assertIn(f"{path}:not-checked", r.evidence(C.DEEP))
        r = result("rootbox", {}, True, deep)
        C.check_deep(r, {}, True)
        self.assertEqual(r.status(C.DEEP), "FAIL")

    def test_owners_deep_needs_the_journal_acl_in_the_tree_and_the_image(self):
        deep = C.CHECKS + (C.DEEP,)
        for name in ("rootbox", "single"):
            r = result(name, {}, True, deep)
            C.check_deep(r, {"deep": DEEP_OK, "acl": ACL_OK}, False)
            self.assertEqual(r.status(C.DEEP), "FAIL")
            self.assertIn("/var/log/journal:no-acl-in-the-tree", r.evidence(C.DEEP))
        r = result("rootbox", {}, True, deep)
        C.check_deep(r, {"deep": DEEP_OK, "acl": ["user::rwx", "group::r-x", "other::r-x"]}, True)
        self.assertIn("/var/log/journal:acl(want group:adm)", r.evidence(C.DEEP))

    def test_sections_split_the_guest_output(self):
        self.assertEqual(C.sections("x\n### state\nrunning\n### failed\n### end\n"),
                         {"state": ["running"], "failed": [], "end": []})


class FirmwarePath(unittest.TestCase):
    KV = "6.1.0-50-amd64"

    def test_uefi_needs_grub_and_the_kernel_it_loaded_from_at(self):
        u = Uefi(self.KV, LAYOUTS["default"], "rootbox-boot")
        u.root_partuuid = "x"
        grub = "rootbox boot test: GRUB found hd0,gpt2"
        kernel = f"[    0.000000] Command line: BOOT_IMAGE=/@/boot/vmlinuz-{self.KV} root=PARTUUID=x"
        self.assertTrue(u.path_check(f"{grub}\n{kernel}\n")[0])
        self.assertFalse(u.path_check(f"{grub}\n{kernel.replace('=x', '=y')}\n")[0])
        self.assertFalse(u.path_check(f"{kernel}\n")[0])
        self.assertFalse(u.path_check("[    0.000000] Command line: root=LABEL=rootbox-boot\n")[0])

    def test_uboot_needs_its_script_and_a_partuuid_root(self):
        b = UBoot(Path("vmlinuz"), Path("initrd.img"), LAYOUTS["default"])
        b.root_partuuid = "3c42a6a4-02"
        self.assertFalse(b.path_check("rootbox boot test: U-Boot runs boot.scr\n"
                                      "[    0.000000] Command line: root=PARTUUID=aaaaaaaa-02 rw\n")[0])
        ok = ("U-Boot 2023.01\nrootbox boot test: U-Boot runs boot.scr\n"
              "[    0.000000] Command line: root=PARTUUID=3c42a6a4-02 rw\n")
        self.assertTrue(b.path_check(ok)[0])
        self.assertFalse(b.path_check("U-Boot 2023.01\n[    0.000000] Command line: root=PARTUUID=3c42a6a4-02\n")[0])


@unittest.skipUnless(all(shutil.which(t) for t in ("grub-mkstandalone", "mkimage")), "needs grub-efi, u-boot-tools")
class DiskSpecs(unittest.TestCase):
    """The rootbox disk specs the firmware boots write (rootbox itself is
    run by the boot test)."""
    def setUp(self):
        self.d = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.d)

    def test_uefi_disk_is_gpt_with_an_esp_tree_and_the_root_guid_grub_names(self):
        u = Uefi("6.1.0-50-amd64", LAYOUTS["default"], "rootbox-boot")
        spec = u.disk_spec({"raw": "/x.img"}, self.d)
        self.assertEqual(spec["table"], "gpt")
        esp, root = spec["partitions"]
        self.assertEqual((esp["type"], root["type"]), ("esp", "root-x86-64"))
        self.assertTrue((Path(esp["content"]["fat"]["dir"]) / "EFI/BOOT/BOOTX64.EFI").is_file())
        self.assertEqual(root["guid"], u.root_partuuid)
        self.assertIn(f"root=PARTUUID={u.root_partuuid} rootflags=subvol=@", (self.d / "grub.cfg").read_text())
        self.assertEqual(root["content"], {"raw": "/x.img"})

    def test_uboot_disk_is_mbr_with_a_bootable_fat_and_the_disk_id_the_script_names(self):
        k, i = self.d / "vmlinuz", self.d / "initrd"
        k.write_bytes(b"k")
        i.write_bytes(b"i")
        b = UBoot(k, i, LAYOUTS["default"])
        spec = b.disk_spec({"btrfs": {"label": "x"}}, self.d)
        self.assertEqual(spec["table"], "mbr")
        self.assertEqual(f"{spec['diskId'][2:]}-02", b.root_partuuid)
        fat, root = spec["partitions"]
        self.assertTrue(fat["bootable"])
        self.assertEqual(sorted(p.name for p in Path(fat["content"]["fat"]["dir"]).iterdir()),
                         ["boot.scr", "initrd.img", "vmlinuz"])
        self.assertIn(f"PARTUUID={b.root_partuuid}", (self.d / "boot.cmd").read_text())

    def test_build_spec_has_the_layout_and_the_closure(self):
        spec = build_spec(Path("/t"), LAYOUTS["default"].with_subvol("@nix", "/nix"), "L", "512M", Path("/ci"))
        self.assertEqual(spec["subvolumes"][0], {"name": "@", "mountpoint": "/", "type": "default"})
        self.assertEqual(spec["subvolumes"][-1], {"name": "@nix", "mountpoint": "/nix"})
        self.assertEqual((spec["rootfs"], spec["closure"], spec["label"]), ("/t", "/ci", "L"))


if __name__ == "__main__":
    unittest.main()


def keys(text):
    """[(key, value)] of a repart.d file's [Partition] section, in order."""
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert lines[0] == "[Partition]", lines[0]
    return [tuple(l.split("=", 1)) for l in lines[1:]]


class RepartDefinitions(unittest.TestCase):
    """--from-definitions: the repart.d files the UEFI boot writes."""
    GUID = "3f0a6c5e-1111-4222-8333-444455556666"

    def test_the_esp_and_the_btrfs_root_with_the_layouts_subvolumes_in_repart_keys_only(self):
        files = R.definitions(LAYOUTS["default"], "rootbox-boot", self.GUID)
        self.assertEqual(list(files), ["00-esp.conf", "10-root.conf"])      # repart's order: by name
        esp, root = (keys(files[n]) for n in files)
        self.assertEqual(esp, [("Type", "esp"), ("Label", "ESP"), ("Format", "vfat"), ("CopyFiles", "/esp:/"),
                               ("SizeMinBytes", str(64 << 20)), ("SizeMaxBytes", str(64 << 20))])
        self.assertEqual(root, [
            ("Type", "root-x86-64"), ("Label", "rootbox-boot"), ("UUID", self.GUID), ("Format", "btrfs"),
            ("CopyFiles", "/root:/@"), ("CopyFiles", "/root/home:/@home"),
            ("CopyFiles", "/root/var/log:/@log"), ("CopyFiles", "/root/srv:/@srv"),
            ("ExcludeFiles", "/root/home/"), ("ExcludeFiles", "/root/var/log/"), ("ExcludeFiles", "/root/srv/"),
            ("Subvolumes", "/@ /@home /@log /@srv"), ("MakeDirectories", "/@ /@home /@log /@srv"),
            ("DefaultSubvolume", "/@")])
        self.assertFalse([k for k, _ in esp + root if k.startswith("X-")])

    def test_a_layout_without_a_root_subvolume_is_refused(self):
        with self.assertRaises(HarnessError):
            R.definitions(LAYOUTS["impermanence"], "l", self.GUID)
        with self.assertRaises(HarnessError):
            R.definitions(EXT4, "l", self.GUID)

    def test_rootbox_derives_the_spec_boots_layout_from_them(self):
        """rootbox disk --print-spec of the definitions: the layout the spec
        boot builds (build_spec), below root/ of the copy source, and the
        GUID grub.cfg names.  Needs a rootbox binary (ROOTBOX, else this
        repo's target/debug/rootbox); under CI its absence is a failure."""
        repo = Path(__file__).resolve().parents[3]
        rootbox = os.environ.get("ROOTBOX") or str(repo / "target/debug/rootbox")
        if not os.access(rootbox, os.X_OK):
            if os.environ.get("CI"):
                self.fail(f"no rootbox binary at {rootbox} (build it, or set ROOTBOX)")
            self.skipTest(f"no rootbox binary at {rootbox}")
        d = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, d)
        for sub in ("root/home", "root/var/log", "root/srv", "esp/EFI/BOOT"):
            (d / "src" / sub).mkdir(parents=True)
        (d / "defs").mkdir()
        for name, text in R.definitions(LAYOUTS["default"], "rootbox-boot", self.GUID).items():
            (d / "defs" / name).write_text(text)
        r = subprocess.run([rootbox, "disk", "--definitions", d / "defs", "--copy-source", d / "src",
                            "--print-spec"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        esp, root = json.loads(r.stdout)["partitions"]
        self.assertEqual((esp["type"], esp["size"]), ("esp", "64M"))
        self.assertEqual(esp["content"]["build"]["filesystem"], "vfat")
        self.assertEqual(esp["content"]["build"]["rootfs"], str(d / "src/esp"))
        self.assertEqual((root["type"], root["guid"].lower(), root["name"]), ("root-x86-64", self.GUID, "rootbox-boot"))
        build = root["content"]["build"]
        self.assertEqual((build["filesystem"], build["label"], build["rootfs"]), ("btrfs", "rootbox-boot", str(d / "src")))
        want = build_spec(d / "src/root", LAYOUTS["default"], "rootbox-boot", "0")["subvolumes"]
        got = [{"name": s["name"], "mountpoint": s["mountpoint"].removeprefix("/root") or "/",
                **({"type": s["type"]} if s["type"] != "rw" else {})} for s in build["subvolumes"]]
        self.assertEqual(got, want)


class Arm64Initrd(unittest.TestCase):
    """The initrd made on the host for --arch arm64 (harness/initrd.py)."""
    def setUp(self):
        self.d = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.d)

    def moddir(self):
        m = self.d / "lib/modules/6.1.0-9-arm64"
        m.mkdir(parents=True)
        (m / "modules.dep").write_text(
            "kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/raid6/raid6_pq.ko kernel/lib/libcrc32c.ko\n"
            "kernel/crypto/xor.ko:\nkernel/lib/raid6/raid6_pq.ko:\nkernel/lib/libcrc32c.ko:\n"
            "kernel/crypto/crc32c_generic.ko:\nkernel/drivers/block/virtio_blk.ko:\n")
        (m / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
        (m / "modules.alias").write_text("alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n")
        for rel in ("fs/btrfs/btrfs.ko", "crypto/xor.ko", "lib/raid6/raid6_pq.ko", "lib/libcrc32c.ko",
                    "crypto/crc32c_generic.ko", "drivers/block/virtio_blk.ko"):
            (m / "kernel" / rel).parent.mkdir(parents=True, exist_ok=True)
            (m / "kernel" / rel).write_bytes(b"\x7fELF " + rel.encode())
        return m

    def test_modules_come_after_what_they_need_and_builtins_are_left_out(self):
        mods = I.Modules(self.moddir())
        order = mods.load_order(mods.providers("crypto-crc32c") + ["virtio_pci", "virtio_blk", "btrfs"])
        self.assertEqual(order, ["crc32c_generic", "virtio_blk", "xor", "raid6_pq", "libcrc32c", "btrfs"])
        with self.assertRaisesRegex(Exception, "module nope .*neither"):
            mods.load_order(["nope"])

    def test_a_builtin_alias_needs_no_module(self):
        m = self.moddir()
        (m / "modules.builtin").write_text("kernel/crypto/crc32c_generic.ko\n")
        self.assertEqual(I.Modules(m).providers("crypto-crc32c"), [])

    @unittest.skipUnless(shutil.which("cpio"), "needs cpio")
    def test_the_initrd_is_a_cpio_the_host_tools_read(self):
        import subprocess
        self.moddir()
        parts = self.d / "parts"
        (parts / "bin").mkdir(parents=True)
        (parts / "bin/busybox").write_bytes(b"busybox")
        out = self.d / "initrd.img"
        order = I.make_initrd(self.d, "6.1.0-9-arm64", parts, out)
        listing = subprocess.run(f"zcat {out} | cpio -t -v --quiet", shell=True, capture_output=True,
                                 text=True, check=True).stdout
        names = [line.split()[-1] if " -> " not in line else line.split()[-3] for line in listing.splitlines()]
        for want in ["init", "bin/busybox", "bin/sh", "dev/console", "etc/rootbox-modules", "lib/modules/btrfs.ko"]:
            self.assertIn(want, names)
        self.assertIn("crw-------", listing)
        init = subprocess.run(f"zcat {out} | cpio -i --quiet --to-stdout init", shell=True,
                              capture_output=True, check=True).stdout
        self.assertEqual(init, I.INIT.read_bytes())
        lst = subprocess.run(f"zcat {out} | cpio -i --quiet --to-stdout etc/rootbox-modules", shell=True,
                             capture_output=True, text=True, check=True).stdout
        self.assertEqual(lst.split(), order)
        # the same inputs give the same bytes
        again = self.d / "again.img"
        I.make_initrd(self.d, "6.1.0-9-arm64", parts, again)
        self.assertEqual(out.read_bytes(), again.read_bytes())


class Arm64Disks(unittest.TestCase):
    def setUp(self):
        self.d = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.d)

    def test_uboot_disk_is_gpt_with_a_legacy_bootable_fat_and_extlinux_naming_the_root(self):
        if not A.UBOOT_BIN.exists():
            self.skipTest(f"needs {A.UBOOT_BIN}")
        k, i = self.d / "Image", self.d / "initrd"
        k.write_bytes(b"k")
        i.write_bytes(b"i")
        b = A.UBootArm64(k, i, LAYOUTS["default"])
        spec = b.disk_spec({"btrfs": {"label": "x"}}, self.d)
        self.assertEqual(spec["table"], "gpt")
        firmware, fat, root = spec["partitions"]
        self.assertNotIn("attributes", firmware)
        self.assertEqual(Path(firmware["content"]["raw"]).stat().st_size, 1 << 20)
        self.assertEqual(fat["attributes"], ["legacy-bootable"])
        self.assertEqual((root["type"], root["guid"]), ("root-arm64", b.root_partuuid))
        tree = Path(fat["content"]["fat"]["dir"])
        self.assertEqual(sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()),
                         ["Image", "extlinux/extlinux.conf", "initrd.img"])
        conf = (tree / "extlinux/extlinux.conf").read_text()
        self.assertIn(f"append root=PARTUUID={b.root_partuuid} rootflags=subvol=@ rootfstype=btrfs rw "
                      "console=ttyAMA0", conf)
        ok = ("U-Boot 2023.01\nScanning virtio 0:2...\nFound /extlinux/extlinux.conf\n"
              f"[    0.000000] Kernel command line: root=PARTUUID={b.root_partuuid} rootflags=subvol=@\n")
        self.assertTrue(b.path_check(ok)[0])
        self.assertFalse(b.path_check(ok.replace(b.root_partuuid, "other"))[0])
        self.assertFalse(b.path_check(ok.replace("Found /extlinux/extlinux.conf\n", ""))[0])
        # partition 1 scanned: the fallback when no partition is marked bootable
        self.assertFalse(b.path_check(ok.replace("0:2", "0:1"))[0])
        self.assertFalse(b.path_check("Scanning virtio 0:1...\n" + ok)[0])

    def test_arm64_boots_run_under_tcg_on_the_virt_machine(self):
        b = A.UBootArm64(Path("Image"), Path("initrd"), LAYOUTS["default"])
        self.assertEqual(b.machine("tcg")[:5], ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"])
        with self.assertRaises(Exception):
            b.machine("kvm")
        self.assertEqual(Uefi("k", LAYOUTS["default"], "l").machine("tcg")[0], "qemu-system-x86_64")
