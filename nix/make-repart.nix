# A disk image from nixpkgs' `image.repart` partition set, made by
# `rootbox disk --definitions` instead of systemd-repart: the same
# partitions, with every file root's (the build user's files become root's
# in rootbox's namespace; the store closure is copied in as a build's
# --closure), no `unshare`/fakeroot needed.
#
#   pkgs.callPackage "${rootbox-src}/nix/make-repart.nix" {
#     inherit (config.image.repart) name partitions;
#   }
#
# `partitions.<name>` is as nixpkgs' nixos/modules/image/repart.nix takes
# it: `{ storePaths ? [ ]; stripNixStorePrefix ? false; contents ? { };
# repartConfig; }`, where `contents."<path in the partition>".source` is a
# file or directory and `repartConfig` the partition's repart.d keys
# (strings, integers, booleans, lists for repeated keys). Each partition
# becomes the definition file `<name>.conf` (nixpkgs writes them the same
# way, so they are in name order), its `contents` are copied into a tree
# given to it as `CopyFiles=/<name>:/`, its `storePaths`' closure as
# `X-Rootbox-Closure=` (in /nix/store of the partition, registered), or
# with `stripNixStorePrefix = true` copied into that tree at its root, each
# store path as `/<hash>-<name>`, as nixpkgs' amend-repart-definitions.py
# gives repart `CopyFiles=/nix/store/<p>:/<p>` (a store partition mounted
# at /nix/store; no registration, as there). The keys rootbox takes and refuses are in the
# README ("From systemd-repart definitions"); a refused key fails the build
# with the key named.
#
# The output: `$out/${name}.raw` (`.raw.zst` with compression) and
# `$out/report.json` (`rootbox disk --json`: the table, the partitions, the
# dm-verity root hashes); with `split = true` also each partition's
# `$out/${name}.<SplitName>.raw`, as systemd-repart --split names them.
# Not done, and refused at evaluation: compression other than zstd (or
# with split).
{
  lib,
  runCommand,
  buildPackages,
  closureInfo,
  btrfs-progs,
  dosfstools,
  mtools,
  e2fsprogs ? null,
  erofs-utils ? null,
  squashfs-tools ? null,
  cryptsetup ? null,
  rootbox ? null,

  # --- image.repart's names ---------------------------------------------------
  # The image's base name (image.repart.name).
  name ? "image",
  # The partitions (image.repart.partitions).
  partitions,
  # image.repart.split: also write each partition as its own file.
  split ? false,
  # image.repart.compression: { enable; algorithm ? "zstd"; level? }.
  compression ? { enable = false; },

  # --- rootbox's --------------------------------------------------------------
  # The architecture of Type=root, usr, ... (repart's --architecture).
  architecture ? null,
  # Extra arguments for `rootbox disk` (e.g. [ "--table" "mbr" ]).
  extraRootboxArgs ? [ ],
}:

assert lib.assertMsg (!(split && (compression.enable or false)))
  "make-repart.nix (rootbox): split = true with compression is not supported";
assert lib.assertMsg (!(compression.enable or false) || (compression.algorithm or "zstd") == "zstd")
  "make-repart.nix (rootbox): compression.algorithm must be \"zstd\", not ${toString (compression.algorithm or "")}";

let
  rootbox' = if rootbox != null then rootbox else buildPackages.callPackage ./package.nix { };
  names = builtins.attrNames partitions;
  zstd = compression.enable or false;
  imgName = name + ".raw" + (if zstd then ".zst" else "");

  # One repart.d value: booleans as systemd writes them.
  str = v: if builtins.isBool v then (if v then "yes" else "no") else toString v;
  # `Key=value` lines; a list is the key repeated.
  lines = config: builtins.concatLists (map
    (k: map (v: "${k}=${str v}") (if builtins.isList config.${k} then config.${k} else [ config.${k} ]))
    (builtins.attrNames config));

  partition = n:
    let
      p = partitions.${n};
      contents = p.contents or { };
      storePaths = p.storePaths or [ ];
      strip = p.stripNixStorePrefix or false;
      closure = closureInfo { rootPaths = storePaths; };
    in
    {
      conf = builtins.concatStringsSep "\n" ([ "[Partition]" ] ++ lines p.repartConfig
        ++ lib.optional (contents != { } || (strip && storePaths != [ ])) "CopyFiles=/${n}:/"
        ++ lib.optional (!strip && storePaths != [ ]) "X-Rootbox-Closure=${closure}") + "\n";
      # stripNixStorePrefix: the closure's paths at the tree's root. The
      # copies are the build user's, which rootbox makes root's; their
      # times are clamped to SOURCE_DATE_EPOCH (rootbox disk --reproducible).
      copyStore = lib.optionalString (strip && storePaths != [ ]) ''
        # cp gives each copy its source's mode less the umask, which takes
        # nothing from the store's (0444, 0555): the modes repart keeps.
        while read -r p; do
          cp -RP "$p" ./trees/${n}/
        done < ${closure}/store-paths
      '';
      # Shell commands copying `contents` into ./trees/<name>.
      copy = builtins.concatStringsSep "\n" (map
        (target: ''
          mkdir -p "$(dirname ./trees/${n}${target})"
          cp -rL ${lib.escapeShellArg contents.${target}.source} ./trees/${n}${target}
          chmod -R u+w ./trees/${n}${target}
        '')
        (builtins.attrNames contents));
    };
  parts = builtins.listToAttrs (map (n: { name = n; value = partition n; }) names);
  # The environment variable of partition i's definition (names may hold
  # characters a shell variable cannot).
  indexed = builtins.genList (i: { inherit i; n = builtins.elemAt names i; }) (builtins.length names);

  rootboxArgs = [ "--json" ]
    ++ lib.optionals zstd [ "--compress-output" "zstd" ]
    ++ lib.optionals (architecture != null) [ "--architecture" architecture ]
    ++ lib.optionals split [ "--split" ]
    ++ extraRootboxArgs;
in
runCommand imgName
  ({
    nativeBuildInputs = [ rootbox' btrfs-progs dosfstools mtools ]
      ++ builtins.filter (p: p != null) [ e2fsprogs erofs-utils squashfs-tools cryptsetup ];
    passAsFile = map (x: "conf${toString x.i}") indexed;
    passthru = { definitions = builtins.mapAttrs (_: p: p.conf) parts; };
  } // builtins.listToAttrs (map (x: { name = "conf${toString x.i}"; value = parts.${x.n}.conf; }) indexed))
  ''
    mkdir -p ./definitions ./trees "$out"
    ${builtins.concatStringsSep "\n" (map (x: ''
      cp "$conf${toString x.i}Path" ${lib.escapeShellArg "./definitions/${x.n}.conf"}
      mkdir -p ${lib.escapeShellArg "./trees/${x.n}"}
      ${parts.${x.n}.copy}
      ${parts.${x.n}.copyStore}
    '') indexed)}
    # -o in the build directory: the builds' scratch space goes beside the
    # output, out of the store. stdenv sets SOURCE_DATE_EPOCH, so the disk
    # is reproducible (rootbox disk --reproducible).
    rootbox disk --definitions ./definitions --copy-source ./trees \
      ${lib.escapeShellArgs rootboxArgs} -o ${lib.escapeShellArg "./${imgName}"} >"$out/report.json"
    mv ./*.raw* "$out/"
  ''
