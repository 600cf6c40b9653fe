# A flake for rootbox, kept in nix/ (the repo root has no flake.nix yet).
# Use it from the repository as  nix build ./nix  (Nix finds the git
# checkout and evaluates this file with the whole repo as source, so ../
# paths work; only files known to git are visible), or from elsewhere as
#   inputs.rootbox.url = "git+https://…/rootbox?dir=nix";
# Outputs:
#   packages.<system>.{rootbox,default}
#   lib.makeBtrfsFs       the file nix/make-btrfs-fs.nix, for
#                         sdImage.rootFilesystemCreator or pkgs.callPackage
#   lib.makeDisk          the file nix/make-disk.nix (a whole MBR/GPT disk)
#   legacyPackages.<system>.makeBtrfsFs { storePaths = …; volumeLabel = …; … }
#   legacyPackages.<system>.makeDisk { storePaths = …; populateFirmwareCommands = …; … }
#                         (callPackage'd with nixpkgs and this rootbox)
#   overlays.default      adds pkgs.rootbox, pkgs.makeBtrfsFs and pkgs.makeDisk
# To move it to the repo root: replace ./package.nix by ./nix/package.nix and
# ./make-btrfs-fs.nix by ./nix/make-btrfs-fs.nix (and ./make-disk.nix likewise).
{
  description = "rootbox: filesystem images owned by root, built without root";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        rootbox = pkgs.callPackage ./package.nix { };
        default = rootbox;
      });

      lib.makeBtrfsFs = ./make-btrfs-fs.nix;
      lib.makeDisk = ./make-disk.nix;

      legacyPackages = forAllSystems (pkgs: {
        makeBtrfsFs = args: pkgs.callPackage ./make-btrfs-fs.nix
          ({ rootbox = self.packages.${pkgs.system}.rootbox; } // args);
        makeDisk = args: pkgs.callPackage ./make-disk.nix
          ({ rootbox = self.packages.${pkgs.system}.rootbox; } // args);
      });

      overlays.default = final: _prev: {
        rootbox = final.callPackage ./package.nix { };
        makeBtrfsFs = args: final.callPackage ./make-btrfs-fs.nix args;
        makeDisk = args: final.callPackage ./make-disk.nix args;
      };
    };
}
