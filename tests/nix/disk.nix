# nix/make-disk.nix called as a NixOS configuration would call it, against
# the nixpkgs stand-in (tests/nix/nixpkgs-standin.nix), in two layouts:
# - rpi: what nixpkgs' sd-image.nix makes for a Raspberry Pi, with its
#   option defaults (MBR, disk id 0x2178694e, FAT "FIRMWARE" 30 MiB at
#   8 MiB, compressImage = true, root label NIXOS_SD), populateFirmwareCommands
#   writing config.txt as raspberry-pi's sd-image module does (in small), and
#   populateRootCommands as generic-extlinux-compatible's populateCmd would
#   (in small); the root with @ (default) and @nix.
# - uefi: a GPT with a 64 MiB ESP (EFI/BOOT/BOOTX64.EFI), a raw blob at
#   sector 64 and a raw partition (as a U-Boot board's idbloader.img and
#   u-boot.itb), the root as root-x86-64 with the legacy-bootable attribute,
#   a bmap, uncompressed.
{ tools, hostPkgs, rootbox, storePath, layout, runId, standin ? "0" }:
let
  pkgs = import ./nixpkgs-standin.nix { inherit tools hostPkgs rootbox; };
  # Dummy boot blobs: not zeros, so they are data.
  blob = name: n: builtins.toFile name (builtins.concatStringsSep ""
    (builtins.genList (i: "${name} block ${toString i} ${runId}\n") n));

  blobs = {
    idbloader = blob "idbloader.img" 2000;
    uboot = blob "u-boot.itb" 3000;
  };

  common = {
    storePaths = [ (builtins.storePath storePath) ];
    populateImageCommands = ''
      mkdir -p ./files/boot/extlinux
      printf 'DEFAULT nixos\nLABEL nixos\n  LINUX /boot/Image\n# %s\n' ${runId} >./files/boot/extlinux/extlinux.conf
    '';
    subvolumes = [
      { name = "@"; mountpoint = "/"; type = "default"; }
      { name = "@nix"; mountpoint = "/nix"; }
    ];
  };

  args = {
    rpi = common // {
      compressImage = true;
      populateFirmwareCommands = ''
        echo 'arm_64bit=1' >firmware/config.txt
        mkdir -p firmware/overlays
        printf '%s\n' ${runId} >firmware/overlays/README
      '';
    };
    uefi = common // {
      table = "gpt";
      imageName = "nixos-uefi.img";
      firmwarePartitionOffset = null;
      firmwareSize = 64;
      firmwarePartitionName = "ESP";
      firmwareFatSize = 32;
      populateFirmwareCommands = ''
        mkdir -p firmware/EFI/BOOT
        printf 'MZ dummy loader %s\n' ${runId} >firmware/EFI/BOOT/BOOTX64.EFI
      '';
      blobs = [ { file = blobs.idbloader; sector = 64; maxSize = "8032K"; } ];
      extraPartitions = [
        { name = "uboot"; size = "8M"; type = "linux"; content.raw = blobs.uboot; }
      ];
      rootPartitionType = "root-x86-64";
      rootPartitionAttributes = [ "legacy-bootable" ];
      bmap = true;
    };
  }.${layout};
in
{
  disk = pkgs.callPackage ../../nix/make-disk.nix args;
  closureInfo = (pkgs.callPackage ../../nix/make-disk.nix args).closure;
  inherit blobs;
}
