# A store path that references others, for the `build` test's closure.
# nix-store --add never records references, so this one is built: Nix scans
# the output and registers references to `lib` and `data` (check with
# `nix-store -q --references`). The builder copies busybox in, so the output
# does not reference `tools` (that would pull 400 symlinks into the closure).
{ tools, lib, data, runId }:
let t = builtins.storePath tools; in
derivation {
  name = "rootbox-test-app";
  system = "x86_64-linux";
  builder = "${t}/bin/sh";
  PATH = "${t}/bin";
  lib = builtins.storePath lib;
  data = builtins.storePath data;
  inherit runId;
  args = [ "-c" ''
    set -eu
    mkdir -p $out/bin $out/share
    printf '#!%s/bin/greet\n# run %s\n' "$lib" "$runId" >$out/bin/app
    chmod 755 $out/bin/app
    ln -s $data/etc/motd $out/share/motd
  '' ];
}
