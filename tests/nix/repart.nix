# nix/make-repart.nix called with a partition set in the shape of nixpkgs'
# image.repart (nixos/modules/image/repart.nix: partitions.<name> =
# { storePaths; contents."<path>".source; repartConfig; }), against the
# nixpkgs stand-in (tests/nix/nixpkgs-standin.nix): an ESP whose loader
# comes from `contents`, and a btrfs root holding the test closure
# (`storePaths`) and /etc/hostname from `contents`; a store partition
# (`stripNixStorePrefix = true`: the closure at its root); split = true.
{ tools, hostPkgs, rootbox, storePath, runId, standin ? "0" }:
let
  pkgs = import ./nixpkgs-standin.nix { inherit tools hostPkgs rootbox; };
  loader = builtins.toFile "BOOTX64.EFI" "MZ dummy loader ${runId}\n";
  hostname = builtins.toFile "hostname" "repart-${runId}\n";
in
{
  image = pkgs.callPackage ../../nix/make-repart.nix {
    name = "nixos-repart";
    # image.repart.split: each partition also as its own file.
    split = true;
    partitions = {
      "10-esp" = {
        contents."/EFI/BOOT/BOOTX64.EFI".source = loader;
        repartConfig = {
          Type = "esp";
          Format = "vfat";
          Label = "ESP";
          SizeMinBytes = "32M";
          SizeMaxBytes = "32M";
        };
      };
      "20-root" = {
        storePaths = [ (builtins.storePath storePath) ];
        contents."/etc/hostname".source = hostname;
        repartConfig = {
          Type = "root-x86-64";
          Format = "btrfs";
          Label = "nixos";
          Minimize = "guess";
        };
      };
      # A store partition as nixpkgs' appliance images make one (mounted
      # at /nix/store): the closure at its root.
      "30-store" = {
        storePaths = [ (builtins.storePath storePath) ];
        stripNixStorePrefix = true;
        repartConfig = {
          Type = "linux-generic";
          Format = "btrfs";
          Label = "store";
          Minimize = "guess";
        };
      };
    };
  };
}
