# A whole disk image (MBR or GPT) built with `rootbox disk`, from the pieces
# a NixOS configuration already has: the store paths of the system, the
# commands that populate the root tree (`populateImageCommands`, as
# sd-image's populateRootCommands) and the firmware partition
# (`populateFirmwareCommands`), raw blobs at fixed offsets (boot loaders),
# and the btrfs layout from `subvolumes` or the system's `fileSystems`.
# Every file of the btrfs root is owned by root; the FAT firmware partition
# has no owners. Nothing runs as root, nothing is loop-mounted.
#
# The output has the shape of nixpkgs' nixos/modules/installer/sd-card/
# sd-image.nix, because Hydra and users expect it: `$out` is a directory,
#   $out/sd-image/${imageName}            the disk (or ${imageName}.zst with
#                                         compressImage)
#   $out/nix-support/hydra-build-products `file sd-image <that path>`
#   $out/nix-support/system               the build platform's system
# plus rootbox's own files beside them:
#   $out/sd-image/${imageName}.bmap       bmaptool's block map of the
#                                         uncompressed disk (bmap = true)
#   $out/report.json                      `rootbox disk --json`: the table,
#                                         each partition, the btrfs build's
#                                         report (copied bytes, owners)
#
#   pkgs.callPackage "${rootbox-src}/nix/make-disk.nix" {
#     storePaths = [ config.system.build.toplevel ];
#     populateImageCommands = config.sdImage.populateRootCommands;
#     populateFirmwareCommands = config.sdImage.populateFirmwareCommands;
#     subvolumes = [ { name = "@"; mountpoint = "/"; type = "default"; }
#                    { name = "@nix"; mountpoint = "/nix"; } ];
#   }
#
# The partitions, in this order: the firmware partition (FAT, unless
# `firmwarePartition = false`), `extraPartitions`, then the btrfs root. The
# defaults are sd-image.nix's (MBR, disk id 0x2178694e, a bootable FAT
# type 0x0b "FIRMWARE" of 30 MiB at 8 MiB, the root type 0x83 labelled
# NIXOS_SD); `table = "gpt"` gives an EFI system partition instead (type
# esp) unless `firmwarePartitionType` says otherwise. Unlike sd-image.nix
# the root partition is as large as its filesystem needs (plus headroom),
# not a dd of a separately built image: `rootbox disk` builds the btrfs
# straight into the disk.
#
# `rootbox`: taken from pkgs when it has one (nix/flake.nix's overlay adds
# it); otherwise built from this repository with nix/package.nix, for the
# build platform (buildPackages), as the tool runs there. `rootbox disk`
# runs mkfs.vfat, fsck.vfat (dosfstools), mmd, mcopy, mdir (mtools) and
# mkfs.btrfs (btrfs-progs) from PATH; they are nativeBuildInputs here.
{
  lib,
  runCommand,
  buildPackages,
  btrfs-progs,
  dosfstools,
  mtools,
  rootbox ? null,

  # --- sd-image.nix's names -------------------------------------------------
  # File name of the disk under $out/sd-image/ (".zst" is added with
  # compressImage).
  imageName ? "nixos-sd-image.img",
  # Compress the disk with zstd (rootbox disk --compress-output zstd).
  compressImage ? false,
  # Store paths (derivations) whose closure goes into /nix/store of the root
  # filesystem, registered (closureInfo) for `nix-store --load-db`.
  storePaths,
  # Shell commands that populate ./files (created for you): the root tree
  # of the btrfs partition (/boot, /etc, ...). They run as the build user;
  # in the image everything is root's regardless.
  populateImageCommands ? "",
  # Shell commands that populate ./firmware (created for you): the content
  # of the FAT partition (config.txt, start4.elf, EFI/BOOT/BOOTX64.EFI...).
  # Names must be valid on FAT; symlinks are not allowed (copy with -L).
  populateFirmwareCommands ? "",
  # The firmware partition's start, in MiB (sd-image's default 8; null: the
  # next aligned sector after the table).
  firmwarePartitionOffset ? 8,
  # Its size in MiB (null: what its files need).
  firmwareSize ? 30,
  # MBR disk identifier, also the FAT volume id (sd-image's default). null:
  # derived by rootbox (from the layout, as the build is reproducible).
  firmwarePartitionID ? "0x2178694e",
  # The FAT label.
  firmwarePartitionName ? "FIRMWARE",
  # Filesystem label of the root (mkfs.btrfs -L).
  rootVolumeLabel ? "NIXOS_SD",
  # Filesystem UUID of the root. null: rootbox derives one.
  rootPartitionUUID ? null,

  # --- the disk -------------------------------------------------------------
  # "mbr" or "gpt".
  table ? "mbr",
  # Make the FAT firmware partition at all.
  firmwarePartition ? true,
  # Its type: an MBR byte or a type name (README "Disks"). null: "b" (FAT32,
  # bootable, as sd-image.nix) for MBR, "esp" for GPT.
  firmwarePartitionType ? null,
  # FAT 12, 16 or 32; null: mkfs.vfat's choice for the size.
  firmwareFatSize ? null,
  # Extra partitions between the firmware and the root, each an attrset as
  # in the disk spec's partitions[] (name, type, startSector or start, size,
  # content = { raw = "${u-boot}/u-boot.itb"; } ...).
  extraPartitions ? [ ],
  # Raw blobs outside the table: [ { file; sector or offset; maxSize?; name?; } ].
  blobs ? [ ],
  # The root partition: its type (MBR byte or name, e.g. "root-arm64" on
  # GPT), GPT attributes (e.g. [ "legacy-bootable" ] for U-Boot's extlinux
  # scan), its explicit start sector (null: the next aligned one), and free
  # space after the filesystem (null: none).
  rootPartitionType ? "linux",
  rootPartitionAttributes ? [ ],
  rootPartitionStartSector ? null,
  # GPT partition name of the root (its PARTLABEL; with MBR only a name).
  rootPartitionName ? "root",
  # Where partitions without a start begin (rootbox's default 1M).
  alignment ? null,
  # GPT disk GUID. null: derived.
  diskGuid ? null,
  # Also write $out/sd-image/${imageName}.bmap (for bmaptool copy).
  bmap ? false,

  # --- the btrfs root, as nix/make-btrfs-fs.nix ------------------------------
  # Subvolumes, each { name; mountpoint; type ? "rw"; }. null (and no
  # fileSystems): one subvolume "@" at / that is the default subvolume.
  subvolumes ? null,
  # A NixOS `config.fileSystems` instead (excludes subvolumes).
  fileSystems ? null,
  # Where the store registration goes (null: rootbox's default,
  # /nix-path-registration, or /nix/nix-path-registration without a /).
  registration ? null,
  # Free space inside the btrfs filesystem, e.g. "256M" (null: rootbox's).
  headroom ? null,
  # mkfs.btrfs --compress, e.g. "zstd:3".
  btrfsCompression ? null,
  # Extra command-line arguments for `rootbox disk` (e.g. [ "--seed" "x" ]).
  extraRootboxArgs ? [ ],
}:

assert lib.assertMsg (subvolumes == null || fileSystems == null)
  "make-disk.nix (rootbox): give either subvolumes or fileSystems, not both";
assert lib.assertMsg (table == "mbr" || table == "gpt")
  "make-disk.nix (rootbox): table must be \"mbr\" or \"gpt\", not ${toString table}";

let
  rootbox' = if rootbox != null then rootbox else buildPackages.callPackage ./package.nix { };
  closure = buildPackages.closureInfo { rootPaths = storePaths; };
  isMbr = table == "mbr";
  mib = n: n * 1024 * 1024;
  nonNull = lib.filterAttrs (_: v: v != null);

  firmware = nonNull {
    name = "firmware";
    type = if firmwarePartitionType != null then firmwarePartitionType
      else if isMbr then "b" else "esp";
    bootable = if isMbr then true else null;
    startSector = if firmwarePartitionOffset == null then null
      else mib firmwarePartitionOffset / 512;
    size = if firmwareSize == null then null else mib firmwareSize;
    content.fat = nonNull {
      dir = "./firmware";
      label = firmwarePartitionName;
      volumeId = firmwarePartitionID;
      fatSize = firmwareFatSize;
    };
  };

  root = nonNull {
    name = rootPartitionName;
    type = rootPartitionType;
    attributes = if rootPartitionAttributes == [ ] then null else rootPartitionAttributes;
    startSector = rootPartitionStartSector;
    # The btrfs build spec (README "The spec"); relative paths are resolved
    # against the disk spec, written to the build directory beside ./files.
    content.btrfs = nonNull {
      label = rootVolumeLabel;
      uuid = rootPartitionUUID;
      inherit headroom registration;
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
  };

  spec = nonNull {
    inherit table alignment blobs;
    diskId = if isMbr then firmwarePartitionID else null;
    diskGuid = if isMbr then null else diskGuid;
    partitions = lib.optional firmwarePartition firmware ++ extraPartitions ++ [ root ];
  };

  imgName = imageName + lib.optionalString compressImage ".zst";
  rootboxArgs = [ "--json" ]
    ++ lib.optionals compressImage [ "--compress-output" "zstd" ]
    ++ lib.optionals bmap [ "--bmap" "./disk.bmap" ]
    ++ extraRootboxArgs;
in
runCommand imgName
  {
    nativeBuildInputs = [ rootbox' btrfs-progs dosfstools mtools ];
    spec = builtins.toJSON spec;
    fileSystemsJson = if fileSystems == null then "" else builtins.toJSON fileSystems;
    passAsFile = [ "spec" "fileSystemsJson" ];
    passthru = { inherit closure; rootboxSpec = spec; };
  }
  ''
    mkdir -p "$out/nix-support" "$out/sd-image"
    img="$out/sd-image/${imgName}"
    echo "${buildPackages.stdenv.hostPlatform.system or builtins.currentSystem}" >"$out/nix-support/system"
    echo "file sd-image $img" >>"$out/nix-support/hydra-build-products"
    (
      mkdir -p ./files
      ${populateImageCommands}
    )
    (
      mkdir -p ./firmware
      ${populateFirmwareCommands}
    )
    cp "$specPath" ./disk.json
    ${lib.optionalString (fileSystems != null) ''cp "$fileSystemsJsonPath" ./fileSystems.json''}
    # -o in the build directory, as make-btrfs-fs.nix: the btrfs build's
    # scratch space goes beside the output, so it stays out of the store
    # rootbox stages from. mv keeps the holes (coreutils copies sparse
    # files sparse across filesystems). stdenv sets SOURCE_DATE_EPOCH, so
    # the disk is reproducible (rootbox disk --reproducible).
    rootbox disk --spec ./disk.json ${lib.escapeShellArgs rootboxArgs} \
      -o ./disk.img >"$out/report.json"
    ${lib.optionalString bmap ''mv ./disk.bmap "$out/sd-image/${imageName}.bmap"''}
    mv ./disk.img "$img"
  ''
