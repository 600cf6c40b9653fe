# `run` mode: inside a real Nix 2.8 build sandbox, record who the builder is
# and check that `rootbox run` makes it root in a user namespace.
#
# Arguments (all strings, passed with --argstr by tests/nix/run-test):
#   tools   store path of a dir with bin/busybox and one symlink per applet
#   rootbox store path of a dir with bin/rootbox (ignored with standin = "1")
#   standin "1": use busybox `unshare -r` instead of rootbox (plumbing check)
#   runId   changes every run, so the derivation hash changes and Nix really
#           builds (never a cached result)
{ tools, rootbox ? "", standin ? "0", runId }:
let
  t = builtins.storePath tools;
  rb = if standin == "1" then null else builtins.storePath rootbox;
in
derivation {
  name = "rootbox-nix-run-test";
  system = "x86_64-linux";
  builder = "${t}/bin/sh";
  args = [ ./run-builder.sh ];
  PATH = "${t}/bin:/usr/sbin:/usr/bin";
  inherit runId standin;
  tools = t;
  rootbox = if rb == null then "" else "${rb}/bin/rootbox";
}
