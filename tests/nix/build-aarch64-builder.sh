# shellcheck shell=sh disable=SC2154  # out, buildBuilder come from the derivation
# Builder for build-aarch64.nix (the arm64 busybox sh, emulated): says the
# machine, runs build-builder.sh (with via = "spec": a JSON spec file, as
# nix/make-btrfs-fs.nix gives rootbox), then `btrfs check --readonly` on the
# image, as make-btrfs-fs.nix does before the image becomes $out.
set -eu
machine=$(uname -m)
echo "build-aarch64-builder: uname -m: $machine" >&2
[ "$machine" = aarch64 ] || { echo "build-aarch64-builder: not emulated aarch64" >&2; exit 1; }
sh "$buildBuilder"
echo "$machine" >"$out/machine"
btrfs check --readonly "$out/image.btrfs" >&2
