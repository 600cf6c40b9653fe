# A btrfs filesystem image of a Nix store closure plus a populated root
# tree, built with rootbox, so that every file in it is owned by root (and
# not by the Nix build user, as with the fakeroot-based
# nixos/lib/make-btrfs-fs.nix of nixpkgs).
#
# It has the shape of nixpkgs' make-btrfs-fs.nix and make-ext4-fs.nix: one
# function, called with `pkgs.callPackage`, whose `$out` IS the image file
# (`btrfs-fs.img`, or the zstd-compressed `btrfs-fs.img.zst` with
# compressImage). The arguments those files take keep their names and
# defaults here; rootbox adds its own (subvolumes, fileSystems, ...).
# So nixpkgs' SD-card module takes it as it is:
#
#   sdImage.rootFilesystemCreator = "${rootbox-src}/nix/make-btrfs-fs.nix";
#
# (sd-image.nix calls it `pkgs.callPackage creator { storePaths;
# compressImage; populateImageCommands; volumeLabel; uuid?; }` and dd's the
# result into its root partition, after `zstd -d` when compressed).
# With a layout of subvolumes, call it yourself:
#
#   sdImage.rootFilesystemImage = pkgs.callPackage "${rootbox-src}/nix/make-btrfs-fs.nix" {
#     storePaths = [ config.system.build.toplevel ];
#     volumeLabel = "NIXOS_SD";
#     compressImage = true;
#     populateImageCommands = config.sdImage.populateRootCommands;
#     subvolumes = [ { name = "@"; mountpoint = "/"; type = "default"; }
#                    { name = "@nix"; mountpoint = "/nix"; } ];
#   };
#
# rootbox's JSON report (what was staged how, copied bytes, owners, times)
# is the second output, `report`: `${image.report}/result.json`. It cannot
# live in `$out`, which is a file; nothing is written to nix-support.
#
# `rootbox`: taken from pkgs when it has one (nix/flake.nix's overlay adds
# it); otherwise built from this repository with nix/package.nix, for the
# build platform (buildPackages), as the tool runs there.
{
  lib,
  runCommand,
  buildPackages,
  zstd,
  btrfs-progs,
  rootbox ? null,

  # --- the arguments of nixpkgs' make-btrfs-fs.nix -------------------------
  # List of store paths (derivations) whose closure goes into /nix/store in
  # the image, with the registration (`nix-store --load-db` input) made by
  # closureInfo for exactly that closure.
  storePaths,
  # Compress the image file with zstd; `$out` is then the .zst file.
  compressImage ? false,
  # Shell commands that populate ./files (created for you): its content
  # becomes the root of the image's tree (/boot, /etc, ...). They run as the
  # build user; in the image everything is root's regardless.
  populateImageCommands ? "",
  # Filesystem label (mkfs.btrfs -L), e.g. "NIXOS_SD".
  volumeLabel,
  # Filesystem UUID. make-btrfs-fs.nix's default, fixed; null: rootbox
  # derives one (from the seed with reproducible = true, else random).
  uuid ? "44444444-4444-4444-8888-888888888888",

  # --- rootbox's own -------------------------------------------------------
  # Subvolumes, each { name; mountpoint; type ? "rw"; } with type one of rw,
  # ro, default, default-ro. Each receives the part of the tree under its
  # mountpoint, minus deeper mountpoints. null (and no fileSystems): one
  # subvolume "@" at / that is the default subvolume, so a mount without
  # subvol= (sd-image's fileSystems."/") sees what make-btrfs-fs.nix's flat
  # image holds; rootbox does not build an image without subvolumes.
  # Excludes `fileSystems`.
  subvolumes ? null,
  # A NixOS `config.fileSystems` attrset instead: its btrfs entries on this
  # image's device with a `subvol=` option become subvolumes; a tmpfs `/`
  # means no root subvolume (impermanence: content outside every subvolume
  # is left out, and the report lists it). Excludes `subvolumes`.
  fileSystems ? null,
  # Where in the image the store registration goes, an absolute path. null:
  # rootbox's default, /nix-path-registration (where make-btrfs-fs.nix puts
  # it and sd-image's postBootCommands read it), or
  # /nix/nix-path-registration when / is not in the image.
  registration ? null,
  # "auto" (the smallest filesystem that fits, plus headroom) or a fixed size
  # such as "4G" or a number of bytes.
  size ? "auto",
  # Free space on top of the content with size = "auto", e.g. "256M". null:
  # rootbox's default.
  headroom ? null,
  # Transparent compression of the files (mkfs.btrfs --compress), e.g.
  # "zstd:3". null: none. Independent of compressImage.
  btrfsCompression ? null,
  # rootbox --reproducible: the same inputs give the same bytes. Without it
  # the SOURCE_DATE_EPOCH that stdenv always sets still clamps the image's
  # times (see README "Reproducible images" for what each costs).
  reproducible ? false,
  # Run `btrfs check` on the image before it becomes `$out`, as
  # make-btrfs-fs.nix does (rootbox reads every owner back in any case).
  check ? true,
  # Extra command-line arguments for `rootbox build` (e.g. [ "-v" ]).
  extraRootboxArgs ? [ ],
}:

assert lib.assertMsg (subvolumes == null || fileSystems == null)
  "make-btrfs-fs.nix (rootbox): give either subvolumes or fileSystems, not both";

let
  rootbox' = if rootbox != null then rootbox else buildPackages.callPackage ./package.nix { };
  closure = buildPackages.closureInfo { rootPaths = storePaths; };

  # The rootbox spec (README "The spec"). Unset fields are left out, so
  # rootbox's defaults apply. Relative paths are resolved against the spec
  # file, which is written to the build directory beside ./files.
  spec = lib.filterAttrs (_: v: v != null) {
    filesystem = "btrfs";
    label = volumeLabel;
    inherit uuid size headroom registration;
    subvolumes =
      if subvolumes != null then subvolumes
      else if fileSystems != null then null
      else [ { name = "@"; mountpoint = "/"; type = "default"; } ];
    compress = btrfsCompression;
    rootfs = "./files";
    closure = "${closure}";
    fileSystems = if fileSystems == null then null else "./fileSystems.json";
    storeDir = builtins.storeDir;
  };
  rootboxArgs = lib.optional reproducible "--reproducible" ++ extraRootboxArgs;
in
runCommand "btrfs-fs.img${lib.optionalString compressImage ".zst"}"
  {
    outputs = [ "out" "report" ];
    nativeBuildInputs = [ rootbox' btrfs-progs ] ++ lib.optional compressImage zstd;
    spec = builtins.toJSON spec;
    fileSystemsJson = if fileSystems == null then "" else builtins.toJSON fileSystems;
    passAsFile = [ "spec" "fileSystemsJson" ];
    passthru = { inherit closure; rootboxSpec = spec; };
  }
  ''
    mkdir -p "$report"
    (
      mkdir -p ./files
      ${populateImageCommands}
    )
    cp "$specPath" ./spec.json
    ${lib.optionalString (fileSystems != null) ''cp "$fileSystemsJsonPath" ./fileSystems.json''}
    # -o in the build directory: rootbox refuses an output inside the store
    # directory it stages from, and $out is there.
    rootbox build --spec ./spec.json --json ${lib.escapeShellArgs rootboxArgs} \
      -o ./image.btrfs >"$report/result.json"
    ${lib.optionalString check "btrfs check --readonly ./image.btrfs"}
    ${if compressImage then ''
      zstd -T"$NIX_BUILD_CORES" --no-progress ./image.btrfs -o "$out"
    '' else ''
      mv ./image.btrfs "$out"
    ''}
  ''
