# A flake for rootbox, kept in nix/ (the repo root has no flake.nix yet).
# Use it from the repository as  nix build ./nix  (Nix finds the git
# checkout and evaluates this file with the whole repo as source, so ../
# paths work; only files known to git are visible), or from elsewhere as
#   inputs.rootbox.url = "git+https://…/rootbox?dir=nix";
# Outputs:
#   packages.<system>.{rootbox,default}
#   lib.makeBtrfsFs       the file nix/make-btrfs-fs.nix, for
#                         sdImage.rootFilesystemCreator or pkgs.callPackage
#   legacyPackages.<system>.makeBtrfsFs { storePaths = …; volumeLabel = …; … }
#                         (callPackage'd with nixpkgs and this rootbox)
#   overlays.default      adds pkgs.rootbox and pkgs.makeBtrfsFs
# To move it to the repo root: replace ./package.nix by ./nix/package.nix and
# ./make-btrfs-fs.nix by ./nix/make-btrfs-fs.nix.
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

      legacyPackages = forAllSystems (pkgs: {
        makeBtrfsFs = args: pkgs.callPackage ./make-btrfs-fs.nix
          ({ rootbox = self.packages.${pkgs.system}.rootbox; } // args);
      });

      overlays.default = final: _prev: {
        rootbox = final.callPackage ./package.nix { };
        makeBtrfsFs = args: final.callPackage ./make-btrfs-fs.nix args;
      };
    };
}
