# A stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image.nix with
# nix/make-btrfs-fs.nix as its root filesystem creator, built against the
# nixpkgs stand-in (tests/nix/nixpkgs-standin.nix). What it imitates of
# sd-image.nix, as that module does it:
# - rootfsImage: `pkgs.callPackage config.sdImage.rootFilesystemCreator`
#   with exactly { storePaths; compressImage; populateImageCommands;
#   volumeLabel; } and `uuid` only when rootPartitionUUID is not null; the
#   option defaults (compressImage = true, rootVolumeLabel = "NIXOS_SD",
#   firmwarePartitionOffset = 8, firmwareSize = 30, firmwarePartitionID
#   0x2178694e, firmwarePartitionName FIRMWARE). `layout = "subvolumes"`
#   instead overrides sdImage.rootFilesystemImage with a callPackage of the
#   same file that adds `subvolumes` (what README "From Nix" shows).
# - sdImage: `root_fs=${rootFilesystemImage}` used as the image FILE
#   (`zstd -d` first when compressed), the size from `du -B 512
#   --apparent-size`, `truncate`, an MBR from sfdisk (FAT `b` bootable at
#   the gap, root `83` after it), `partx` + `dd conv=notrunc` of the root
#   filesystem into partition 2, `mkfs.vfat --invariant` + `mcopy` of
#   ./firmware into partition 1 with `fsck.vfat -vn`, nix-support files, and
#   `zstd --rm` of the result.
# Left out: faketime around `mmd` (the firmware here has no directories, so
# sd-image would not call it either), postBuildCommands (empty by default),
# and the module system itself (the config values are written out below).
{ tools, hostPkgs, rootbox, storePath, layout ? "sd-image", runId }:
let
  pkgs = import ./nixpkgs-standin.nix { inherit tools hostPkgs rootbox; };
  inherit (pkgs) lib;

  config.sdImage = {
    storePaths = [ (builtins.storePath storePath) ];
    compressImage = true;
    rootVolumeLabel = "NIXOS_SD";
    rootPartitionUUID = null;
    firmwarePartitionOffset = 8;
    firmwareSize = 30;
    firmwarePartitionID = "0x2178694e";
    firmwarePartitionName = "FIRMWARE";
    # What generic-extlinux-compatible's populateCmd would write, in small.
    populateRootCommands = ''
      mkdir -p ./files/boot/extlinux
      printf 'DEFAULT nixos\nLABEL nixos\n  LINUX /boot/Image\n# %s\n' ${runId} >./files/boot/extlinux/extlinux.conf
    '';
    populateFirmwareCommands = ''
      echo 'arm_64bit=1' >firmware/config.txt
    '';
    rootFilesystemCreator = ../../nix/make-btrfs-fs.nix;
    inherit rootFilesystemImage;
  };
  creatorArgs = {
    inherit (config.sdImage) storePaths;
    compressImage = config.sdImage.compressImage;
    populateImageCommands = config.sdImage.populateRootCommands;
    volumeLabel = config.sdImage.rootVolumeLabel;
  } // lib.optionalAttrs (config.sdImage.rootPartitionUUID != null) {
    uuid = config.sdImage.rootPartitionUUID;
  };
  rootFilesystemImage =
    if layout == "sd-image" then
      pkgs.callPackage config.sdImage.rootFilesystemCreator creatorArgs
    else
      pkgs.callPackage ../../nix/make-btrfs-fs.nix (creatorArgs // {
        subvolumes = [
          { name = "@"; mountpoint = "/"; type = "default"; }
          { name = "@nix"; mountpoint = "/nix"; }
        ];
      });

  sdImage = pkgs.callPackage (
    { stdenv, dosfstools, mtools, util-linux, zstd }:
    stdenv.mkDerivation {
      name = "nixos-sd-image-${layout}.img${lib.optionalString config.sdImage.compressImage ".zst"}";
      nativeBuildInputs = [ dosfstools mtools util-linux ]
        ++ lib.optional config.sdImage.compressImage zstd;
      compressImage = if config.sdImage.compressImage then "1" else "";
      buildCommand = ''
        mkdir -p $out/nix-support $out/sd-image
        export img=$out/sd-image/nixos-sd-image.img
        echo "${builtins.currentSystem}" >$out/nix-support/system
        if test -n "$compressImage"; then
          echo "file sd-image $img.zst" >>$out/nix-support/hydra-build-products
        else
          echo "file sd-image $img" >>$out/nix-support/hydra-build-products
        fi

        root_fs=${config.sdImage.rootFilesystemImage}
        ${lib.optionalString config.sdImage.compressImage ''
          root_fs=./root-fs.img
          zstd -d --no-progress "${config.sdImage.rootFilesystemImage}" -o $root_fs
        ''}
        gap=${toString config.sdImage.firmwarePartitionOffset}
        rootSizeBlocks=$(du -B 512 --apparent-size $root_fs | awk '{ print $1 }')
        firmwareSizeBlocks=$((${toString config.sdImage.firmwareSize} * 1024 * 1024 / 512))
        imageSize=$((rootSizeBlocks * 512 + firmwareSizeBlocks * 512 + gap * 1024 * 1024))
        truncate -s $imageSize $img
        sfdisk --no-reread --no-tell-kernel $img <<EOF
            label: dos
            label-id: ${config.sdImage.firmwarePartitionID}

            start=''${gap}M, size=$firmwareSizeBlocks, type=b, bootable
            start=$((gap + ${toString config.sdImage.firmwareSize}))M, type=83
        EOF

        eval $(partx $img -o START,SECTORS --nr 2 --pairs)
        dd conv=notrunc if=$root_fs of=$img seek=$START count=$SECTORS

        eval $(partx $img -o START,SECTORS --nr 1 --pairs)
        truncate -s $((SECTORS * 512)) firmware_part.img
        mkfs.vfat --invariant -i ${config.sdImage.firmwarePartitionID} -n ${config.sdImage.firmwarePartitionName} firmware_part.img
        mkdir firmware
        ${config.sdImage.populateFirmwareCommands}
        find firmware -exec touch -d 2000-01-01 {} +
        cd firmware
        for d in $(find . -type d -mindepth 1 | sort); do
          faketime "2000-01-01 00:00:00" mmd -i ../firmware_part.img "::/$d"
        done
        for f in $(find . -type f | sort); do
          mcopy -pvm -i ../firmware_part.img "$f" "::/$f"
        done
        cd ..
        fsck.vfat -vn firmware_part.img
        dd conv=notrunc if=firmware_part.img of=$img seek=$START count=$SECTORS

        if test -n "$compressImage"; then
          zstd -T$NIX_BUILD_CORES --rm $img
        fi
      '';
    }
  ) { };
in
{
  inherit sdImage;
  rootfs = rootFilesystemImage;
  report = rootFilesystemImage.report;
  closureInfo = rootFilesystemImage.closure;
}
