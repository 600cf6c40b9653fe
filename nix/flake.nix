# A flake for rootbox, kept in nix/ (the repo root has no flake.nix yet).
# Use it from the repository as  nix build ./nix  (Nix finds the git
# checkout and evaluates this file with the whole repo as source, so ../
# paths work; only files known to git are visible), or from elsewhere as
#   inputs.rootbox.url = "git+https://…/rootbox?dir=nix";
# Outputs:
#   packages.<system>.{rootbox,default}
#   lib.makeBtrfsImage pkgs { storePaths = …; volumeLabel = …; … }
#   legacyPackages.<system>.makeBtrfsImage { … }   (same, pkgs applied)
#   overlays.default   (adds pkgs.rootbox and pkgs.makeBtrfsImage)
# To move it to the repo root: replace ./package.nix by ./nix/package.nix and
# ./make-btrfs-image.nix by ./nix/make-btrfs-image.nix.
{
  description = "rootbox: filesystem images owned by root, built without root";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      makeBtrfsImageFor = pkgs: rootbox: import ./make-btrfs-image.nix {
        inherit (pkgs) lib runCommand closureInfo writeText zstd;
        inherit rootbox;
      };
    in
    {
      packages = forAllSystems (pkgs: rec {
        rootbox = pkgs.callPackage ./package.nix { };
        default = rootbox;
      });

      lib.makeBtrfsImage = pkgs:
        makeBtrfsImageFor pkgs (pkgs.callPackage ./package.nix { });

      legacyPackages = forAllSystems (pkgs: {
        makeBtrfsImage = makeBtrfsImageFor pkgs self.packages.${pkgs.system}.rootbox;
      });

      overlays.default = final: _prev: {
        rootbox = final.callPackage ./package.nix { };
        makeBtrfsImage = makeBtrfsImageFor final final.rootbox;
      };
    };
}
