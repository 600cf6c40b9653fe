"""--nix-closure: a Nix store closure made on the host by Debian's Nix, put
into @nix by `rootbox build --closure`, and proved in the booted guest by
Debian's Nix (nix-bin in the guest's rootfs: the tree variant "nix",
trees.with_variants).

Imitates the first boot of a NixOS sd-image (nixpkgs
nixos/modules/installer/sd-card/sd-image.nix, boot.postBootCommands): when
the registration file exists, `nix-store --load-db < /nix-path-registration`.
The guest then checks what that registration must have given it:
`nix-store --verify --check-contents` (every path's NAR hash recomputed from
the image's files against the hash `nix-store --dump-db` wrote on the host)
and `nix-store -q --references` of the path that has references.

The closure (three paths, made without a build and without nixpkgs):
  lib   `nix-store --add` of a directory: an executable, a symlink
  data  `nix-store --add` of nested directories
  app   `builtins.toFile` whose text names lib and data: Nix registers
        both as its references (nix-store --add never records any)
The paths are content-addressed, so every run makes the same ones; they
stay in the host's store (small; `nix-store --delete` removes them).
"""
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .proc import HarnessError, run

CHECK = "nix"
NAMES = ("rootbox-boot-lib", "rootbox-boot-data", "rootbox-boot-app")


@dataclass
class Closure:
    info: Path            # closureInfo-style dir: store-paths, registration
    lib: str
    data: str
    app: str

    @property
    def paths(self):
        return sorted([self.lib, self.data, self.app])


def make_closure(d):
    """The closure and its closure-info directory under ``d`` (root runs
    this: the host's store is root's)."""
    for t in ("nix-store", "nix-instantiate"):
        if not shutil.which(t):
            raise HarnessError(f"--nix-closure needs {t} on the host (scripts/setup-nix installs nix-bin)")
    src = d / "nix-src"
    shutil.rmtree(src, ignore_errors=True)
    lib, data = src / NAMES[0], src / NAMES[1]
    (lib / "bin").mkdir(parents=True)
    (lib / "bin/greet").write_text("#!/bin/sh\necho hello from the closure\n")
    (lib / "bin/greet").chmod(0o755)
    (lib / "bin/hello").symlink_to("greet")
    (data / "share/doc/deep").mkdir(parents=True)
    (data / "share/doc/deep/motd").write_text("rootbox boot test: a store path in @nix\n")
    lib_p = add(lib)
    data_p = add(data)
    expr = (f'builtins.toFile "{NAMES[2]}" "#!${{builtins.storePath {lib_p}}}/bin/greet\\n'
            f'# motd: ${{builtins.storePath {data_p}}}/share/doc/deep/motd\\n"')
    r = run(["nix-instantiate", "--read-write-mode", "--eval", "--json", "-E", expr], check=True,
            what="nix-instantiate builtins.toFile")
    app_p = json.loads(r.stdout)
    refs = sorted(run(["nix-store", "-q", "--references", app_p], check=True).stdout.split())
    if refs != sorted([lib_p, data_p]):
        raise HarnessError(f"host: {app_p} references {refs}, expected {lib_p} and {data_p}")
    c = Closure(d / "closure-info", lib_p, data_p, app_p)
    closure = sorted(run(["nix-store", "-qR", app_p], check=True).stdout.split())
    if closure != c.paths:
        raise HarnessError(f"host: closure of {app_p} is {closure}, expected {c.paths}")
    c.info.mkdir(exist_ok=True)
    (c.info / "store-paths").write_text("".join(p + "\n" for p in c.paths))
    reg = run(["nix-store", "--dump-db", *c.paths], check=True, what="nix-store --dump-db").stdout
    (c.info / "registration").write_text(reg)
    shutil.rmtree(src)
    return c


def add(path):
    return run(["nix-store", "--add", path], check=True, what=f"nix-store --add {path}").stdout.strip()


def registration_from_log(log):
    """(image path of the registration, number of store paths) from the
    summary `rootbox build` prints: "registration PATH (N store paths)"."""
    m = re.search(r"^registration (\S+) \((\d+) store paths\)", Path(log).read_text(errors="replace"), re.M)
    return (m.group(1), int(m.group(2))) if m else (None, 0)


def guest_script(closure, registration):
    """Run as root over ssh, after the other checks."""
    return f'''echo "### nix-reg"; ls -l {registration} 2>&1
echo "### nix-before"; nix-store --check-validity {closure.app} 2>&1; echo "rc=$?"
echo "### nix-load"; nix-store --load-db < {registration} 2>&1; echo "rc=$?"
echo "### nix-verify"; nix-store --verify --check-contents 2>&1; echo "rc=$?"
echo "### nix-refs"; nix-store -q --references {closure.app} 2>&1; echo "rc=$?"
echo "### nix-valid"; nix-store --check-validity {" ".join(closure.paths)} 2>&1; echo "rc=$?"
echo "### nix-run"; {closure.lib}/bin/hello 2>&1; cat {closure.data}/share/doc/deep/motd 2>&1
echo "### nix-end"
'''


def rc(lines):
    """The exit status a section ends with ("rc=N"), and its other lines."""
    if lines and lines[-1].startswith("rc="):
        return int(lines[-1][3:]), lines[:-1]
    return None, lines


def check(res, sec, closure, registration, count):
    """The nix check from the guest's sections.  (Debian's nix-bin warns
    that group nixbld does not exist: the guest has no build users, and
    nothing here builds.)"""
    bad, ev = [], [f"registration {registration} ({count} store paths, from the build's report)"]
    if count != len(closure.paths):
        bad.append(f"the build registered {count} store paths, not {len(closure.paths)}")
    code, lines = rc(sec.get("nix-before", []))
    ev.append(f"$ nix-store --check-validity APP (before --load-db): exit {code}")
    if code in (0, None):
        bad.append("the app was valid before --load-db: the check would not see a missing registration")
    for name, what in (("nix-load", "nix-store --load-db"), ("nix-verify", "nix-store --verify --check-contents"),
                       ("nix-valid", "nix-store --check-validity")):
        code, lines = rc(sec.get(name, []))
        ev.append(f"$ {what}: exit {code}" + "".join(f"\n  {l}" for l in lines[-8:]))
        if code != 0:
            bad.append(f"{what} exit {code}")
        # --verify exits 0 after repairing nothing, but says so when a path
        # was modified (only with --repair it would fix it)
        if name == "nix-verify":
            if any("was modified" in l or "error" in l for l in lines):
                bad.append("nix-store --verify reported a modified path")
            if "checking store hashes..." not in lines:
                bad.append("nix-store --verify did not check the contents")
    code, lines = rc(sec.get("nix-refs", []))
    ev.append(f"$ nix-store -q --references {closure.app}: exit {code}" + "".join(f"\n  {l}" for l in lines))
    refs = [l for l in lines if l.startswith("/")]
    if code != 0 or sorted(refs) != sorted([closure.lib, closure.data]):
        bad.append(f"references of {closure.app.split('/')[-1]} are {refs}, expected lib and data")
    run_out = sec.get("nix-run", [])
    ev.append("$ lib/bin/hello; cat data/…/motd:" + "".join(f"\n  {l}" for l in run_out))
    if "hello from the closure" not in run_out:
        bad.append("lib/bin/hello (a symlink to a script in the store) did not run")
    res.set(CHECK, not bad, ("" if not bad else f"wrong: {'; '.join(bad)}\n") + "\n".join(ev))
