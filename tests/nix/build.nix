# `build` mode: build a btrfs image with `rootbox build` inside a real Nix
# build sandbox, from a small rootfs made in $TMPDIR and a closure-info dir.
#
# Arguments (strings, passed with --argstr by tests/nix/run-test):
#   tools       store path: bin/busybox + applet symlinks (the builder's shell)
#   rootbox     store path of a dir with bin/rootbox (ignored with standin)
#   standin     "0": use rootbox. "1": stage and run mkfs.btrfs by hand
#               under `unshare -rm` instead (proves the plumbing and the
#               read-back). "bind": like "1" but bind-mount the closure
#               instead of copying it (negative control: 65534 in the image)
#   closureInfo store path of a dir with `store-paths` (one path a line) and
#               `registration` (`nix-store --dump-db` of exactly those paths),
#               i.e. what nixpkgs' closureInfo makes
#   closure     the same store paths, space-separated: each becomes an input
#               of this derivation so that it is visible in the sandbox
#               (closureInfo was added with nix-store --add, which records no
#               references, so depending on it alone would not be enough)
#   via         "cli": rootbox build with command-line flags; "spec": the same
#               layout as a JSON spec file (what nix/make-btrfs-fs.nix does)
#   runId       changes every run: a fresh build every time
{ tools, rootbox ? "", standin ? "0", via ? "cli", closureInfo, closure, runId }:
let
  t = builtins.storePath tools;
  split = s: builtins.filter (x: builtins.isString x && x != "") (builtins.split " " s);
in
derivation {
  name = "rootbox-nix-build-test";
  system = "x86_64-linux";
  builder = "${t}/bin/sh";
  args = [ ./build-builder.sh ];
  PATH = "${t}/bin:/usr/sbin:/usr/bin";
  inherit runId standin via;
  tools = t;
  rootbox = if standin != "0" then "" else "${builtins.storePath rootbox}/bin/rootbox";
  closureInfo = builtins.storePath closureInfo;
  closure = map builtins.storePath (split closure);
}
