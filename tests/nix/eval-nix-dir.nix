# Evaluates nix/package.nix, nix/make-btrfs-fs.nix and nix/make-disk.nix against a tiny mock
# of the nixpkgs functions they use (there is no nixpkgs on the CI machine),
# so that typos, wrong argument names and the generated rootbox spec are
# checked without nixpkgs. Used by `tests/nix/run-test eval`.
#   nix-instantiate --eval --strict --json tests/nix/eval-nix-dir.nix
# The evaluation fails (a throw naming the check) when a generated spec
# differs from tests/nix/eval-expected.nix, when a call that must be
# rejected is not, or when a script lacks a flag its call asked for;
# `checked` lists what was compared (run-test asserts it with jq).
let
  # Just enough of nixpkgs' lib, with the same semantics.
  lib = {
    importTOML = p: builtins.fromTOML (builtins.readFile p);
    fileset = {
      # Like the real one, a missing path is an error.
      unions = ps: map (p: if builtins.isList p then p else assert builtins.pathExists p; toString p) ps;
      difference = a: b: assert builtins.pathExists a && builtins.pathExists b; [ "${toString a} minus ${toString b}" ];
      toSource = { root, fileset }: { root = toString root; inherit fileset; };
    };
    makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
      (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ])
      (builtins.attrNames set));
    assertMsg = pred: msg: pred || builtins.throw msg;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    escapeShellArgs = xs: builtins.concatStringsSep " " (map (x: "'${x}'") xs);
    licenses = { mit = "mit"; asl20 = "asl20"; };
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
  };
  pkg = import ../../nix/package.nix {
    inherit lib;
    rustPlatform.buildRustPackage = args: args;
    makeWrapper = "/mock/makeWrapper";
    installShellFiles = "/mock/installShellFiles";
    btrfs-progs = "/mock/btrfs-progs";
    e2fsprogs = "/mock/e2fsprogs";
    erofs-utils = "/mock/erofs-utils";
    squashfsTools = "/mock/squashfs-tools";
    dosfstools = "/mock/dosfstools";
    mtools = "/mock/mtools";
  };
  # callPackage as nixpkgs does it: formals filled from the mock pkgs.
  mockPkgs = {
    inherit lib;
    runCommand = name: env: script: env // (env.passthru or { }) // { inherit name script; };
    buildPackages = {
      closureInfo = { rootPaths }: "/mock/closure-info";
      callPackage = _: _: "/mock/rootbox-from-package.nix";
    };
    zstd = "/mock/zstd";
    btrfs-progs = "/mock/btrfs-progs";
    dosfstools = "/mock/dosfstools";
    mtools = "/mock/mtools";
  };
  callPackage = f: args: let fn = import f; in
    fn (builtins.intersectAttrs (builtins.functionArgs fn) mockPkgs // args);
  makeBtrfsFs = args: callPackage ../../nix/make-btrfs-fs.nix ({ rootbox = "/mock/rootbox"; } // args);
  # What sd-image.nix passes, nothing more (and no rootbox in pkgs: the
  # function must then build its own).
  sdImageCall = callPackage ../../nix/make-btrfs-fs.nix {
    storePaths = [ "/mock/toplevel" ];
    compressImage = true;
    populateImageCommands = "mkdir -p ./files/boot";
    volumeLabel = "NIXOS_SD";
  };
  impermanence = makeBtrfsFs {
    storePaths = [ "/mock/toplevel" ];
    volumeLabel = "nixos";
    subvolumes = [
      { name = "@nix"; mountpoint = "/nix"; }
      { name = "@persist"; mountpoint = "/persist"; }
      { name = "@home"; mountpoint = "/home"; type = "rw"; }
    ];
    registration = "/nix/nix-path-registration";
    reproducible = true;
  };
  fromFileSystems = makeBtrfsFs {
    storePaths = [ ];
    volumeLabel = "nixos";
    uuid = null;
    fileSystems."/" = { fsType = "tmpfs"; options = [ "mode=755" ]; };
    fileSystems."/nix" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=@nix" ]; };
  };
  both = builtins.tryEval (makeBtrfsFs {
    storePaths = [ ]; volumeLabel = "x"; subvolumes = [ ]; fileSystems = { };
  }).name;
  # nix/make-disk.nix: sd-image.nix's defaults, and a GPT U-Boot board.
  diskDefaults = callPackage ../../nix/make-disk.nix { storePaths = [ "/mock/toplevel" ]; };
  diskGpt = callPackage ../../nix/make-disk.nix {
    storePaths = [ "/mock/toplevel" ];
    table = "gpt"; firmwarePartition = false; bmap = true; compressImage = true;
    blobs = [ { file = "/mock/idbloader.img"; sector = 64; } ];
    extraPartitions = [ { name = "uboot"; startSector = 16384; size = "8M"; type = "linux"; content.raw = "/mock/u-boot.itb"; } ];
    rootPartitionType = "root-arm64"; rootPartitionAttributes = [ "legacy-bootable" ];
    fileSystems."/nix" = { device = "/dev/disk/by-label/NIXOS_SD"; fsType = "btrfs"; options = [ "subvol=@nix" ]; };
  };
  diskBadTable = builtins.tryEval (callPackage ../../nix/make-disk.nix {
    storePaths = [ ]; table = "msdos";
  }).name;

  expected = import ./eval-expected.nix;
  # name → got: true, or a throw saying what differs.
  same = name: got: want: got == want
    || builtins.throw "eval check ${name}: got ${builtins.toJSON got}, want ${builtins.toJSON want}";
  has = name: text: needle: builtins.isString text && builtins.match ".*${needle}.*" text != null
    || builtins.throw "eval check ${name}: the script lacks ${needle}";
  checks = {
    "sdImageCall.rootboxSpec" = same "sdImageCall.rootboxSpec" sdImageCall.rootboxSpec expected.sdImageCall;
    "impermanence.rootboxSpec" = same "impermanence.rootboxSpec" impermanence.rootboxSpec expected.impermanence;
    "fromFileSystems.rootboxSpec" =
      same "fromFileSystems.rootboxSpec" fromFileSystems.rootboxSpec expected.fromFileSystems;
    "diskDefaults.rootboxSpec" = same "diskDefaults.rootboxSpec" diskDefaults.rootboxSpec expected.diskDefaults;
    "diskGpt.rootboxSpec" = same "diskGpt.rootboxSpec" diskGpt.rootboxSpec expected.diskGpt;
    # subvolumes and fileSystems together: refused
    bothRejected = !both.success || builtins.throw "eval check bothRejected: subvolumes + fileSystems was accepted";
    # a partition table make-disk.nix does not know: refused
    diskBadTableRejected = !diskBadTable.success
      || builtins.throw "eval check diskBadTableRejected: table = \"msdos\" was accepted";
    "impermanence.script" = has "impermanence.script" impermanence.script "'--reproducible'";
    "diskGpt.script" = has "diskGpt.script" diskGpt.script "'--compress-output' 'zstd' '--bmap' './disk.bmap'";
  };
in
{
  package = { inherit (pkg) pname version cargoBuildFlags postInstall src; lockFile = toString pkg.cargoLock.lockFile; };
  sdImageCall = { inherit (sdImageCall) name outputs rootboxSpec nativeBuildInputs; };
  impermanence = { inherit (impermanence) name rootboxSpec script nativeBuildInputs; };
  fromFileSystems = { inherit (fromFileSystems) name rootboxSpec fileSystemsJson; };
  bothRejected = !both.success;
  diskDefaults = { inherit (diskDefaults) name rootboxSpec script nativeBuildInputs; };
  diskGpt = { inherit (diskGpt) name rootboxSpec script fileSystemsJson; };
  diskBadTableRejected = !diskBadTable.success;
  # every check, true (a failed one throws before this is printed)
  checked = builtins.attrNames checks;
  allChecksPassed = builtins.all (n: checks.${n}) (builtins.attrNames checks);
}
