"""What is checked in a booted image, what each image is expected to show,
and the verdicts.

A check observes ``ok`` (True/False, or None when it could not run) with
evidence.  Whether that is good news is the image's :class:`Expectation`
(data, in :func:`expectations`): a check the image must pass is PASS or
FAIL, an expected failure XFAIL (or XPASS when it passes after all), a
check the image is not judged by is reported as seen.  Not run is SKIP.
"""
import re
import subprocess
from dataclasses import dataclass, field

from .proc import run

CHECKS = ("build", "sshd", "multi-user", "failed-units", "journal", "mounts", "owners", "ssh-root", "ssh-alice")
DEEP = "owners-deep"
FIRMWARE = "firmware"   # --boot uefi|uboot: the console shows that path was taken

# journal/console lines that mean "files have the wrong owner"
OWNERSHIP_TROUBLE = "unsafe path transition|Authentication refused|bad ownership or modes|must be superuser to use mount"
# The refusal of a build under a single-id map: rootbox's plan walk
# (runner/src/pipeline/plan.rs) meets a 0700 directory, or a file of an
# owner the namespace does not map, that it cannot read.  Only this counts:
# any other "Permission denied" (mkfs, a mount, the harness) is an error.
SINGLE_REFUSAL = (r"cannot read (directory )?/[^\n]*: Permission denied \(os error 13\) "
                  r"\((rootbox runs as you|its owner is not you and does not map into the namespace)")
EMERGENCY = re.compile(r"You are in emergency mode|Give root password for maintenance|Cannot open access to console")

SSH_OPTS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"]

STAT_PATHS = ("/ /etc /root /root/.ssh /root/.ssh/authorized_keys "
              "/home/alice /home/alice/.ssh /home/alice/.ssh/authorized_keys")
DEEP_PATHS = "/etc/shadow /usr/bin/chage /var/log/journal /var/cache/apt/archives/partial /home/alice"
# owners-deep: what the many owners of a Debian tree must be when kept
DEEP_WANT = {"/etc/shadow": "root:shadow", "/usr/bin/chage": "root:shadow",
             "/var/log/journal": "root:systemd-journal", "/var/cache/apt/archives/partial": "_apt:root",
             "/home/alice": "alice:alice"}


@dataclass(frozen=True)
class Expectation:
    """What one image must show.

    required: checks that must PASS.  xfail: checks expected to fail.
    must_fail: checks the image must FAIL (a contrast that passes them
    proves the test cannot tell good from bad; one that fails only for
    another reason, a qemu or firmware problem, proves nothing either).
    refusal: a failed build whose log matches this is as expected too.
    alice_owner: uid:gid /home/alice must have after boot.
    collapsed: owners-deep wants every owner root:root (a single-id map)."""
    image: str
    required: frozenset
    xfail: frozenset = frozenset()
    must_fail: frozenset = frozenset()
    refusal: str | None = None
    alice_owner: str = "0:0"
    collapsed: bool = False
    purpose: str = ""


def expectations(checks, expect_alice_ok):
    """The expectation of every image the harness knows."""
    alice = frozenset() if expect_alice_ok else frozenset({"ssh-alice"})
    alice_owner = "1000:1000" if expect_alice_ok else "0:0"
    return {
        # alice: a single-id map (rootbox's default) makes every file root's,
        # so /home/alice is root-owned and sshd (StrictModes) refuses her key
        "rootbox": Expectation("rootbox", frozenset(checks) - alice, alice, alice_owner=alice_owner,
                               purpose="built by rootbox: must boot and pass every check"),
        # the files keep the build user's uid: the owners check (over ssh,
        # or read from the image when sshd refuses every key) must see it
        "contrast": Expectation("contrast", frozenset({"build"}), must_fail=frozenset({"owners"}),
                                alice_owner=alice_owner,
                                purpose="plain mkfs.btrfs (ext4: mkfs.ext4 -d) as the build user: "
                                        "must fail the owners check"),
        # must boot with every owner collapsed to root (its alice and the
        # journal's complaint about her home are the expected damage), or
        # be refused: a single-id map cannot read the 0700 directories of
        # other ids
        "single": Expectation("single", frozenset(checks) - {"journal", "ssh-alice"}, frozenset({"ssh-alice"}),
                              refusal=SINGLE_REFUSAL, collapsed=True,
                              purpose="--map single of a subid tree: owners collapsed, or refused"),
    }


@dataclass
class Observed:
    ok: bool | None
    evidence: str = ""


def status(exp, check, obs):
    if obs is None or obs.ok is None:
        return "SKIP"
    if check in exp.xfail:
        return "XPASS" if obs.ok else "XFAIL"
    return "PASS" if obs.ok else "FAIL"


@dataclass
class ImageResult:
    name: str
    exp: Expectation
    checks: tuple
    observed: dict = field(default_factory=dict)
    times: dict = field(default_factory=dict)
    capeff: str | None = None      # CapEff the build ran with

    def set(self, check, ok, evidence=""):
        self.observed[check] = Observed(ok, evidence)

    def skip_rest(self, reason, checks=None):
        for c in checks or self.checks:
            if c not in self.observed:
                self.set(c, None, reason)

    def status(self, check):
        return status(self.exp, check, self.observed.get(check))

    def evidence(self, check):
        o = self.observed.get(check)
        return o.evidence if o else ""

    def verdict(self):
        """(as expected?, one line saying why)"""
        st = {c: self.status(c) for c in self.checks}
        if self.exp.refusal and st["build"] == "FAIL" and re.search(self.exp.refusal, self.evidence("build")):
            m = re.search(r"cannot read [^:\n]*", self.evidence("build"))
            return True, f"refused as expected ({m.group(0) if m else self.exp.refusal})"
        bad = [c for c in self.exp.required if st[c] != "PASS"]
        bad += [c for c in self.exp.xfail if st[c] not in ("XFAIL", "XPASS")]
        bad = [c for c in self.checks if c in bad]
        if self.exp.must_fail:
            if st["build"] != "PASS":
                return False, "ERROR (could not build it, so it proves nothing)"
            failed = [c for c in self.checks if st[c] == "FAIL"]
            want = [c for c in self.checks if c in self.exp.must_fail]
            missed = [f"{c} {st[c]}" for c in want if st[c] != "FAIL"]
            if not missed:
                also = [c for c in failed if c not in self.exp.must_fail]
                return True, f"FAILS as expected ({' '.join(want)}" + (
                    f"; also failed: {' '.join(also)})" if also else ")")
            if failed:
                return False, (f"fails, but not as it must ({', '.join(missed)}; failed instead: "
                               f"{' '.join(failed)}) — another failure proves nothing")
            return False, (f"UNEXPECTEDLY PASSES ({', '.join(missed)}) — the test cannot tell good from bad")
        if bad:
            return False, f"FAIL ({' '.join(bad)})"
        notes = [f"{c} {st[c]}" for c in self.checks if st[c] not in ("PASS",)]
        return True, "PASS" + (f" ({', '.join(notes)})" if notes else "")

    def to_json(self):
        ok, why = self.verdict()
        return {"expectation": self.exp.purpose, "as_expected": ok, "verdict": why, "times_s": self.times,
                "build_capeff": self.capeff,
                "checks": {c: {"status": self.status(c), "evidence": self.evidence(c)} for c in self.checks}}


def guest_script(layout, deep, extra=""):
    """Run as root over ssh; one section per check (``extra``: more
    sections, e.g. the nix check's)."""
    mounts = " ".join(mp for mp, _ in layout.mounts())
    s = f'''echo "### state"; timeout 120 systemctl is-system-running --wait 2>&1
echo "### failed"; systemctl --failed --no-legend --plain 2>&1
echo "### journal"; journalctl -b --no-pager -o short-monotonic 2>&1 | grep -aE "{OWNERSHIP_TROUBLE}"
echo "### journal-lines"; journalctl -b --no-pager -q 2>/dev/null | wc -l
echo "### journal-warn"; journalctl -b --no-pager -o short-monotonic -p warning 2>&1 | tail -25
echo "### mounts"; for m in {mounts}; do findmnt -n -o TARGET,SOURCE,FSROOT,FSTYPE,OPTIONS --mountpoint "$m" || echo "$m NOT-MOUNTED"; done
echo "### marker"; cat /srv/rootbox-marker 2>&1
echo "### stat"; stat -c "%u:%g %a %n" {STAT_PATHS} 2>&1
'''
    if deep:
        s += f'''echo "### deep"; stat -c "%U:%G %a %n" {DEEP_PATHS} 2>&1
echo "### acl"; getfacl -p /var/log/journal 2>&1 | grep -v "^#"
'''
    return s + extra + 'echo "### end"\n'


def sections(text):
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            cur = line[4:]
            out.setdefault(cur, [])
        elif cur is not None:
            out[cur].append(line)
    return out


def ssh(key, port, user, command, out, err, timeout):
    return run(["ssh", *SSH_OPTS, "-i", key, "-p", str(port), f"{user}@127.0.0.1", command],
               stdout=out, stderr=err, timeout=timeout)


def guest_checks(res, key, port, d, layout, deep, tree_acl, extra=""):
    """ssh-root, ssh-alice and, given a root shell, multi-user,
    failed-units, mounts, owners (and owners-deep).  Returns the guest's
    sections (for the journal check and the checks of ``extra``)."""
    out = d / "guest.txt"
    # root login (StrictModes yes is sshd's default; the image does not change it)
    r = ssh(key, port, "root", guest_script(layout, deep, extra), out, d / "ssh-root.err", 300)
    err = (d / "ssh-root.err").read_text(errors="replace").strip()
    res.set("ssh-root", r.returncode == 0,
            "root@ logged in with the test key" if r.returncode == 0 else f"ssh root@127.0.0.1 -p {port}: {err}")
    r = ssh(key, port, "alice", "id -un", subprocess.PIPE, d / "ssh-alice.err", 60)
    alice_ok = r.returncode == 0 and (r.stdout or "").strip() == "alice"
    err = (d / "ssh-alice.err").read_text(errors="replace").strip()
    why = ("" if alice_ok or "ssh-alice" not in res.exp.xfail else
           "expected: a single-id map makes /home/alice root's and sshd (StrictModes) refuses her key; "
           "--map subid or an ownership manifest gives alice her home — ")
    res.set("ssh-alice", alice_ok, "alice logged in" if alice_ok else f"{why}ssh alice@127.0.0.1 -p {port}: {err}")
    if not (res.observed["ssh-root"].ok):
        res.skip_rest("no root shell", ["multi-user", "failed-units", "mounts", "owners", DEEP])
        return {}
    sec = sections(out.read_text(errors="replace"))
    state = (sec.get("state") or ["(nothing)"])[-1]
    failed = "\n".join(sec.get("failed", [])).strip()
    res.set("multi-user", state == "running", f"is-system-running: {state}" + (
        "" if state == "running" else
        f"\nfailed units: {failed or 'none'}\n--- journal (warnings and worse, last 25) ---\n"
        + "\n".join(sec.get("journal-warn", []))))
    res.set("failed-units", not failed, f"systemctl --failed: {failed or 'none'}")
    check_mounts(res, layout, sec)
    check_owners(res, sec.get("stat", []), "")
    if deep:
        check_deep(res, sec, tree_acl)
    return sec


def check_mounts(res, layout, sec):
    """Each subvolume where the fstab puts it (ext4: the one filesystem at
    /), and the marker in /srv."""
    lines = sec.get("mounts", [])
    by_target = {}
    for line in lines:
        f = line.split()
        if f:
            by_target[f[0]] = f
    bad = []
    for mp, want in layout.mounts():
        f = by_target.get(mp, [])
        # TARGET SOURCE FSROOT FSTYPE OPTIONS
        fsroot, fstype = (f[2], f[3]) if len(f) >= 4 else ("", "")
        if want == "tmpfs":
            if fstype != "tmpfs":
                bad.append(f"{mp}(want tmpfs)")
        elif fsroot != want or fstype != layout.fstype:
            bad.append(f"{mp}(want {want})")
    if "rootbox boot test" not in sec.get("marker", []):
        bad.append("/srv/rootbox-marker-missing")
    text = "\n".join(lines)
    res.set("mounts", not bad, text if not bad else f"wrong: {' '.join(bad)}\n{text}")


def check_owners(res, stats, note):
    """`stat -c '%u:%g %a %n'` lines: root's everything, /home/alice as expected."""
    want_alice = res.exp.alice_owner
    bad = []
    for line in stats:
        o, _, rest = line.partition(" ")
        p = rest.partition(" ")[2]
        want = want_alice if p.startswith("/home/alice") else "0:0"
        if o != want:
            bad.append(f"{p or line}={o}(want {want})")
    text = "\n".join(stats)
    res.set("owners", not bad and bool(stats),
            f"{note}{text}" if not bad else f"{note}wrong: {' '.join(bad)}\n{text}")


def check_deep(res, sec, tree_acl):
    """owners-deep (--rootfs-kind mmdebstrap): the many owners of a Debian
    tree kept (or, for a single-id map, collapsed to root).  Every path of
    DEEP_PATHS must be there.  The tree's /var/log/journal must carry an
    ACL naming a group (``tree_acl``: else there is nothing to check), and
    the booted one must name group adm (unless collapsed)."""
    deep, acl = sec.get("deep", []), sec.get("acl", [])
    bad, seen = [], set()
    for line in deep:
        f = line.split(" ", 2)
        if len(f) < 3 or f[0] == "stat:":
            bad.append(line)
            continue
        o, m, p = f
        seen.add(p)
        want = "root:root" if res.exp.collapsed else DEEP_WANT.get(p, "?")
        if o != want:
            bad.append(f"{p}={o}(want {want})")
        if not res.exp.collapsed and p == "/usr/bin/chage" and m != "2755":
            bad.append(f"{p}:mode={m}(want 2755)")
    bad += [f"{p}:not-checked" for p in DEEP_PATHS.split() if p not in seen]
    if not tree_acl:
        bad.append("/var/log/journal:no-acl-in-the-tree(the test tree must carry one)")
    elif not res.exp.collapsed and not any(a.startswith("group:adm:") for a in acl):
        bad.append("/var/log/journal:acl(want group:adm)")
    text = "\n".join(deep) + "\n--- getfacl /var/log/journal ---\n" + "\n".join(acl)
    res.set(DEEP, not bad, text if not bad else f"wrong: {' '.join(bad)}\n{text}")


def check_journal(res, sec, console_text):
    """From journalctl over ssh when there was a shell, and from the console
    (journald forwards to ttyS0) in any case.  A clean journal counts only
    if ``journalctl -b`` printed something: an empty or unreadable journal
    is a failure, and without a shell the journal was not read (SKIP)."""
    trouble = re.compile(OWNERSHIP_TROUBLE)
    seen, hits = set(), []
    for line in sec.get("journal", []) + [l for l in console_text.splitlines() if trouble.search(l)]:
        # the same message from the journal and the console: once
        key = re.sub(r"^\s*\[\s*[\d.]+\]\s*", "", line).strip()
        if key and key not in seen:
            seen.add(key)
            hits.append(line.strip())
    if hits:
        res.set("journal", False, "\n".join(hits[:25]))
        return
    count = (sec.get("journal-lines") or [""])[-1].strip()
    if "journal-lines" not in sec:
        res.set("journal", None, "no root shell: journalctl -b was not read (and the console shows no trouble)")
    elif not count.isdigit() or int(count) == 0:
        res.set("journal", False, f"journalctl -b printed nothing ({count or 'no count'}): "
                                  "an empty or unreadable journal proves nothing")
    else:
        res.set("journal", True, f"{count} lines of journalctl -b, none matching: {OWNERSHIP_TROUBLE}")


def offline_owners(res, image, mnt, offset=0, subvols=True):
    """Owners read from the image itself (loop mount, read-only; of a disk:
    the filesystem at ``offset``) when the booted system gave no root
    shell.  ``subvols``: the default btrfs layout (paths in @ and @home);
    else one filesystem holding /."""
    mnt.mkdir(parents=True, exist_ok=True)
    opts = "ro,loop,subvolid=5" if subvols else "ro,loop,noload"
    r = run(["mount", "-o", f"{opts},offset={offset}", image, mnt])
    if r.returncode != 0:
        res.set("owners", None, f"no root shell, and loop mount failed: {r.stderr.strip()}")
        return
    try:
        paths = ["@", "@/etc", "@/root", "@/root/.ssh", "@/root/.ssh/authorized_keys",
                 "@home/alice", "@home/alice/.ssh", "@home/alice/.ssh/authorized_keys", "@/usr/bin/mount"]
        if not subvols:
            paths = ["." + p[1:].replace("home/", "/home/", 1) if p.startswith("@home") else "." + p[1:]
                     for p in paths]
        r = run(["stat", "-c", "%u:%g %a %n", *paths], cwd=mnt)
    finally:
        run(["umount", mnt])
    lines = []
    for line in (r.stdout + r.stderr).splitlines():
        line = re.sub(r" @home/", " /home/", line)
        line = re.sub(r" [@.]/", " /", line)
        line = re.sub(r" [@.]$", " /", line)
        lines.append(line)
    check_owners(res, lines, "(read from the image, not the booted system)\n")
