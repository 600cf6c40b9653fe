# The rootbox specs tests/nix/eval-nix-dir.nix expects nix/*.nix to
# generate for its calls: recorded from the functions, then read against
# what each call asks for (labels, subvolumes, partitions, uuid null → no
# uuid; sd-image.nix's defaults: uuid 44444444-…, firmware partition of
# 30 MiB at sector 16384, disk id 0x2178694e). A change in nix/ that
# changes a spec must change this file too, in the same commit.
{
  sdImageCall = {
    closure = "/mock/closure-info";
    filesystem = "btrfs";
    label = "NIXOS_SD";
    rootfs = "./files";
    size = "auto";
    storeDir = "/nix/store";
    subvolumes = [
      {
        mountpoint = "/";
        name = "@";
        type = "default";
      }
    ];
    uuid = "44444444-4444-4444-8888-888888888888";
  };
  impermanence = {
    closure = "/mock/closure-info";
    filesystem = "btrfs";
    label = "nixos";
    registration = "/nix/nix-path-registration";
    rootfs = "./files";
    size = "auto";
    storeDir = "/nix/store";
    subvolumes = [
      {
        mountpoint = "/nix";
        name = "@nix";
      }
      {
        mountpoint = "/persist";
        name = "@persist";
      }
      {
        mountpoint = "/home";
        name = "@home";
        type = "rw";
      }
    ];
    uuid = "44444444-4444-4444-8888-888888888888";
  };
  fromFileSystems = {
    closure = "/mock/closure-info";
    fileSystems = "./fileSystems.json";
    filesystem = "btrfs";
    label = "nixos";
    rootfs = "./files";
    size = "auto";
    storeDir = "/nix/store";
  };
  diskDefaults = {
    blobs = [ ];
    diskId = "0x2178694e";
    partitions = [
      {
        bootable = true;
        content = {
          fat = {
            dir = "./firmware";
            label = "FIRMWARE";
            volumeId = "0x2178694e";
          };
        };
        name = "firmware";
        size = 31457280;
        startSector = 16384;
        type = "b";
      }
      {
        content = {
          btrfs = {
            closure = "/mock/closure-info";
            label = "NIXOS_SD";
            rootfs = "./files";
            storeDir = "/nix/store";
            subvolumes = [
              {
                mountpoint = "/";
                name = "@";
                type = "default";
              }
            ];
          };
        };
        name = "root";
        type = "linux";
      }
    ];
    table = "mbr";
  };
  diskGpt = {
    blobs = [
      {
        file = "/mock/idbloader.img";
        sector = 64;
      }
    ];
    partitions = [
      {
        content = {
          raw = "/mock/u-boot.itb";
        };
        name = "uboot";
        size = "8M";
        startSector = 16384;
        type = "linux";
      }
      {
        attributes = [
          "legacy-bootable"
        ];
        content = {
          btrfs = {
            closure = "/mock/closure-info";
            fileSystems = "./fileSystems.json";
            label = "NIXOS_SD";
            rootfs = "./files";
            storeDir = "/nix/store";
          };
        };
        name = "root";
        type = "root-arm64";
      }
    ];
    table = "gpt";
  };
}
