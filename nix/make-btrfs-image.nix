# makeBtrfsImage: a btrfs image of a Nix store closure plus a populated root
# tree, built with rootbox, so that every file in it is owned by root (and
# not by the Nix build user, as with nixpkgs' fakeroot-based
# nixos/lib/make-btrfs-fs.nix, whose argument names this mirrors).
#
#   makeBtrfsImage = import ./nix/make-btrfs-image.nix {
#     inherit (pkgs) lib runCommand closureInfo writeText zstd;
#     rootbox = pkgs.callPackage ./nix/package.nix { };
#   };
#   image = makeBtrfsImage {
#     storePaths = [ config.system.build.toplevel ];
#     volumeLabel = "nixos";
#     fileSystems = config.fileSystems;   # or: subvolumes = [ ... ];
#     registration = "/nix/nix-path-registration";
#   };
#   # the image file: "${image}/${image.imageName}"
#
# Unlike make-btrfs-fs.nix, whose $out IS the image file, $out here is a
# directory holding the image (image.btrfs, or image.btrfs.zst with
# compressImage) and rootbox's JSON report (result.json). `passthru.imageName`
# names the image file inside it.
#
# Not evaluated in rootbox's CI (no nixpkgs there): kept simple on purpose.
{
  lib,
  runCommand,
  closureInfo,
  writeText,
  zstd,
  rootbox,
}:

{
  # List of store paths (derivations) whose closure goes into /nix/store in
  # the image. Passed to nixpkgs' closureInfo, which also yields the
  # registration (the store database rows for exactly that closure).
  storePaths,
  # Shell commands that populate ./files (created for you): everything in it
  # becomes the root of the image's filesystem tree (/etc, /boot, /home ...).
  # Run as the build user; ownership in the image is root's regardless.
  populateImageCommands ? "",
  # Filesystem label (mkfs.btrfs -L), e.g. "NIXOS_SD" or "nixos".
  volumeLabel,
  # Filesystem UUID (8-4-4-4-12 hex). null: random. make-btrfs-fs.nix
  # defaults to "44444444-4444-4444-8888-888888888888"; pass that for the
  # same fixed UUID. (The image is not bit-reproducible either way:
  # mkfs.btrfs makes other UUIDs and timestamps at random/now.)
  uuid ? null,
  # Compress the whole image file with zstd (image.btrfs.zst), as
  # make-btrfs-fs.nix does. Independent of `btrfsCompression`.
  compressImage ? false,
  # Transparent btrfs compression of the files as they are copied in
  # (mkfs.btrfs --compress), e.g. "zstd:3", "zlib", "lzo". null: none.
  btrfsCompression ? null,
  # Subvolumes to create, each { name; mountpoint; type ? "rw"; } with type
  # one of rw, ro, default, default-ro. Each receives the part of the tree
  # under its mountpoint, minus deeper mountpoints. Example:
  #   [ { name = "@nix"; mountpoint = "/nix"; }
  #     { name = "@"; mountpoint = "/"; type = "default"; } ]
  # null: no subvolumes (everything in the top-level subvolume, like
  # make-btrfs-fs.nix). Excludes `fileSystems`.
  subvolumes ? null,
  # A NixOS `config.fileSystems` attrset. Its btrfs entries on this image's
  # device that carry a `subvol=` option become subvolumes; a tmpfs `/`
  # means no root subvolume (impermanence: content outside every subvolume
  # is left out, and rootbox lists what it left out). Excludes `subvolumes`.
  fileSystems ? null,
  # "auto" (smallest size that fits the content, plus headroom) or a fixed
  # size such as "4G" or a number of bytes.
  size ? "auto",
  # Free space added on top of the content when size = "auto", e.g. "256M".
  # null: rootbox's default.
  headroom ? null,
  # Where in the image to write the store registration (for
  # `nix-store --load-db` at first boot), an absolute image path. null:
  # rootbox's default. make-btrfs-fs.nix (and sd-image's postBootCommands)
  # use "/nix-path-registration"; with a tmpfs root (impermanence) put it on
  # a persistent subvolume, e.g. "/nix/nix-path-registration".
  registration ? null,
  # Extra command-line arguments for `rootbox build` (e.g. [ "-v" ]).
  extraRootboxArgs ? [ ],
  # Name of the derivation.
  name ? "btrfs-fs-image",
}:

assert lib.assertMsg (subvolumes == null || fileSystems == null)
  "makeBtrfsImage: give either subvolumes or fileSystems, not both";

let
  closure = closureInfo { rootPaths = storePaths; };

  fileSystemsJson =
    if fileSystems == null then null
    else writeText "${name}-fileSystems.json" (builtins.toJSON fileSystems);

  # The rootbox spec (DESIGN.md). Unset fields are left out, so rootbox's
  # defaults apply (the spec rejects null for some fields). Relative paths are
  # resolved in the build directory, where spec.json and ./files both live.
  spec = lib.filterAttrs (_: v: v != null) {
    filesystem = "btrfs";
    label = volumeLabel;
    inherit uuid size headroom registration subvolumes;
    compress = btrfsCompression;
    rootfs = "./files";
    closure = "${closure}";
    fileSystems = if fileSystemsJson == null then null else "${fileSystemsJson}";
    storeDir = builtins.storeDir;
  };

  imageName = "image.btrfs" + lib.optionalString compressImage ".zst";
in
runCommand name
  {
    nativeBuildInputs = [ rootbox ] ++ lib.optional compressImage zstd;
    spec = builtins.toJSON spec;
    passAsFile = [ "spec" ];
    passthru = { inherit imageName closure; rootboxSpec = spec; };
  }
  ''
    mkdir -p ./files $out
    (
      ${populateImageCommands}
    )
    cp "$specPath" ./spec.json
    rootbox build --spec ./spec.json --json \
      ${lib.escapeShellArgs extraRootboxArgs} \
      -o ./image.btrfs > $out/result.json
    ${if compressImage then ''
      zstd -T$NIX_BUILD_CORES --no-progress ./image.btrfs -o $out/${imageName}
    '' else ''
      mv ./image.btrfs $out/${imageName}
    ''}
  ''
