# A stand-in for the few pieces of nixpkgs that nix/make-btrfs-fs.nix and
# nixpkgs' SD-card module use, so that both can be built for real in a Nix
# sandbox on a machine without nixpkgs. It imitates:
#   lib/customisation.nix      callPackage (lib.callPackageWith): the
#                              function's formal arguments filled from pkgs,
#                              defaults kept where pkgs has no such attribute,
#                              explicit arguments win
#   lib/{lists,strings,attrsets,asserts,trivial}.nix
#                              optional(s), optionalString, optionalAttrs,
#                              escapeShellArg(s), filterAttrs, assertMsg
#   pkgs/stdenv/generic/setup.sh
#                              the environment every stdenv build gets:
#                              `set -eu -o pipefail`, SOURCE_DATE_EPOCH
#                              exported with 315532800 as its default,
#                              TZ=UTC, NIX_BUILD_CORES normalised (0 means
#                              nproc), PATH = each nativeBuildInputs' bin/
#                              then the initial path, then `buildCommand`
#                              eval'd (HOME=/homeless-shelter and TMPDIR come
#                              from Nix itself)
#   pkgs/build-support/trivial-builders  runCommand name env buildCommand
#   pkgs/build-support/closure-info.nix  closureInfo { rootPaths }: structured
#                              attrs with exportReferencesGraph.closure, jq
#                              writes store-paths, registration (the
#                              `nix-store --load-db` format: path, narHash,
#                              narSize, empty deriver, reference count,
#                              references) and total-nar-size
# What differs, and why it does not matter here: the shell is a static
# busybox sh (no bash in the sandbox), and the "packages" (zstd, jq,
# btrfs-progs, util-linux, dosfstools, mtools, coreutils) are store dirs of
# symlinks to the host's binaries, which reach the sandbox through
# extra-sandbox-paths (tests/nix/run-test makes them). rootbox is the binary
# under test, unwrapped: btrfs-progs is on PATH through nativeBuildInputs.
{ tools, hostPkgs, rootbox }:
let
  t = builtins.storePath tools;
  host = builtins.mapAttrs (_: p: builtins.storePath p) hostPkgs;

  lib = rec {
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    escapeShellArg = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s)}'";
    escapeShellArgs = xs: builtins.concatStringsSep " " (map escapeShellArg xs);
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
      (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ])
      (builtins.attrNames set));
    assertMsg = pred: msg: pred || builtins.throw msg;
  };

  binPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
  # stdenv's initialPath: coreutils first (here only du, which busybox's
  # lacks --apparent-size for), then everything else busybox has.
  initialPath = [ host.coreutils t ];

  stdenv = {
    # mkDerivation for buildCommand-style derivations (all that is used here).
    mkDerivation = attrs@{ name, buildCommand, nativeBuildInputs ? [ ], passthru ? { }, ... }:
      let
        drv = derivation (builtins.removeAttrs attrs [ "nativeBuildInputs" "passthru" ] // {
          system = builtins.currentSystem;
          builder = "${t}/bin/sh";
          # setup.sh, the parts that change what a build sees.
          args = [ "-c" ''
            set -eu -o pipefail
            export SOURCE_DATE_EPOCH
            : "''${SOURCE_DATE_EPOCH:=315532800}"
            export TZ=UTC
            NIX_BUILD_CORES="''${NIX_BUILD_CORES:-1}"
            if [ "$NIX_BUILD_CORES" -le 0 ]; then NIX_BUILD_CORES=$(nproc); fi
            export NIX_BUILD_CORES
            export PATH="${binPath (nativeBuildInputs ++ initialPath)}"
            # Debian's static busybox sh runs its own applets before searching
            # PATH (FEATURE_SH_STANDALONE): coreutils' du must be a function.
            du() { ${host.coreutils}/bin/du "$@"; }
            eval "$buildCommand"
          '' ];
        });
      in
      drv // passthru;
  };

  pkgs = {
    inherit lib stdenv callPackage;
    rootbox = builtins.storePath rootbox;
    stdenvNoCC = stdenv;
    buildPackages = pkgs;
    runCommand = name: env: buildCommand:
      stdenv.mkDerivation (env // { inherit name buildCommand; });
    closureInfo = { rootPaths }: derivation {
      name = "closure-info";
      system = builtins.currentSystem;
      __structuredAttrs = true;
      exportReferencesGraph.closure = rootPaths;
      builder = "${t}/bin/sh";
      # Structured attrs: no attribute is in the environment; the output path
      # and the closure are in the JSON file NIX_ATTRS_JSON_FILE names. Nix
      # 2.8 names it by its path outside the sandbox; it is ./.attrs.json.
      args = [ "-c" ''
        set -eu
        PATH=${t}/bin:${host.jq}/bin
        a=''${NIX_ATTRS_JSON_FILE:-}
        [ -e "$a" ] || a=$PWD/.attrs.json
        out=$(jq -r .outputs.out "$a")
        mkdir "$out"
        jq -r '.closure[].path' "$a" >"$out/store-paths"
        jq -r '.closure[] | .path, .narHash, (.narSize | tostring), "",
               (.references | length | tostring), .references[]' "$a" >"$out/registration"
        jq '[.closure[].narSize] | add // 0' "$a" >"$out/total-nar-size"
      '' ];
    };
  } // host;

  callPackage = f: overrides:
    let
      fn = if builtins.isFunction f then f else import f;
    in
    fn (builtins.intersectAttrs (builtins.functionArgs fn) pkgs // overrides);
in
pkgs
