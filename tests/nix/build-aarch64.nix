# `build` mode under emulation (tests/nix/run-test --arm64 DIR build): the
# derivation of build.nix with system = "aarch64-linux", which Nix runs
# through the binfmt entry (--option extra-platforms aarch64-linux): the
# builder (an arm64 static busybox), rootbox (the cross-built aarch64 one)
# and mkfs.btrfs/btrfs (arm64, from the sid tree of scripts/setup-arm64) all
# run under qemu-user, as on a NixOS machine with
# boot.binfmt.emulatedSystems = [ "aarch64-linux" ]. qemu-user refuses
# rootbox a user namespace, so it builds without one.
#
# Arguments (strings, --argstr), as build.nix's, plus:
#   arm64Bin    store path: bin/mkfs.btrfs and bin/btrfs, wrappers that run
#               the arm64 binaries of arm64Progs through its loader
#   arm64Progs  store path: libexec/ (the arm64 binaries), lib/ (their arm64
#               loader and libraries)
{ tools, rootbox, arm64Bin, arm64Progs, via ? "spec", closureInfo, closure, runId, ... }:
let
  t = builtins.storePath tools;
  split = s: builtins.filter (x: builtins.isString x && x != "") (builtins.split " " s);
in
derivation {
  name = "rootbox-nix-build-aarch64-test";
  system = "aarch64-linux";
  builder = "${t}/bin/sh";
  args = [ ./build-aarch64-builder.sh ];
  PATH = "${t}/bin:${builtins.storePath arm64Bin}/bin";
  progs = builtins.storePath arm64Progs;
  buildBuilder = ./build-builder.sh;
  standin = "0";
  inherit runId via;
  tools = t;
  rootbox = "${builtins.storePath rootbox}/bin/rootbox";
  closureInfo = builtins.storePath closureInfo;
  closure = map builtins.storePath (split closure);
}
