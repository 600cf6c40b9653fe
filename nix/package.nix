# rootbox, packaged the nixpkgs way.
#
#   rootbox = pkgs.callPackage ./nix/package.nix { };
#
# Builds the `rootbox` binary from the Cargo workspace and wraps it so that
# the tools it runs are found on PATH whatever the caller's PATH is:
# mkfs.btrfs (btrfs-progs, which must be >= 6.12 for `--subvol TYPE:DIR`;
# rootbox checks and says so), mkfs.ext4/debugfs, mkfs.erofs, mksquashfs,
# and mkfs.vfat/mtools for `rootbox disk`. Installs the man pages and the
# bash/zsh/fish completions the binary generates from its own flags.
# Not evaluated in rootbox's CI (no nixpkgs there): kept simple on purpose.
{
  lib,
  rustPlatform,
  makeWrapper,
  installShellFiles,
  btrfs-progs,
  e2fsprogs,
  erofs-utils,
    squashfsTools,
  dosfstools,
  mtools,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "rootbox";
  inherit (cargoToml.workspace.package) version;

  # Only what cargo needs, so edits to scripts/, tests/nix/ or docs do not
  # cause a rebuild. tests/ is needed: runner/Cargo.toml declares its
  # integration tests there (../tests/run.rs, ../tests/build.rs), and cargo
  # refuses a manifest whose declared targets are missing.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../sandbox
      ../btrfs
      ../images
      ../runner
      (lib.fileset.difference ../tests ../tests/nix)
    ];
  };

  # All dependencies come from crates.io, so the lock file alone pins them
  # (no outputHashes needed).
  cargoLock.lockFile = ../Cargo.lock;

  # The workspace has four crates; only the runner crate has a binary.
  cargoBuildFlags = [ "--package" "rootbox" ];
  # Unit tests of all four crates; they need no privileges. Tests that need
  # user namespaces work in the Nix sandbox (nested user namespaces are
  # allowed there); tests that loop-mount images skip themselves without root.
  cargoTestFlags = [ "--workspace" ];
  nativeCheckInputs = [ btrfs-progs ];

  nativeBuildInputs = [ makeWrapper installShellFiles ];

  postInstall = ''
    $out/bin/rootbox __man man
    installManPage man/*.1
    installShellCompletion --cmd rootbox \
      --bash <($out/bin/rootbox completions bash) \
      --zsh <($out/bin/rootbox completions zsh) \
      --fish <($out/bin/rootbox completions fish)
    wrapProgram $out/bin/rootbox \
      --prefix PATH : ${lib.makeBinPath [ btrfs-progs e2fsprogs erofs-utils squashfsTools dosfstools mtools ]}
  '';

  meta = {
    description = "Build filesystem images owned by root, without being root";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "rootbox";
    # User and mount namespaces: Linux only.
    platforms = lib.platforms.linux;
  };
}
