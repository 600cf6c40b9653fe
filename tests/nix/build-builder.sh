# shellcheck shell=sh disable=SC2154  # out, runId, tools, ... come from the derivation
# Builder for build.nix (busybox sh inside the Nix sandbox).
# Keep stderr open until the end: Nix treats EOF on it as "build finished".
set -eu
mkdir -p "$out"
log() { echo "build-builder: $*" >&2; }

# The rootfs, made as the build user (uid 1000 / gid 100 here).
mkdir -p root/etc/ssh root/root/.ssh root/home/alice root/persist/etc/ssh
echo 'PermitRootLogin prohibit-password' >root/etc/ssh/sshd_config
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRootboxTestKeyOnly test@rootbox' \
    >root/root/.ssh/authorized_keys
chmod 700 root/root/.ssh
chmod 600 root/root/.ssh/authorized_keys
echo 'hello from alice' >root/home/alice/notes.txt
echo 'not a real key' >root/persist/etc/ssh/ssh_host_ed25519_key
chmod 600 root/persist/etc/ssh/ssh_host_ed25519_key
log "rootfs as the builder sees it:"
find root -exec stat -c '%u:%g %a %n' {} + >&2

if [ "$standin" != 0 ]; then
    # What rootbox will do, by hand: in a user namespace where we are root,
    # COPY (not bind) the closure and rootfs parts into one staging dir per
    # subvolume, then mkfs.btrfs --rootdir. Copies are owned by the copier
    # (uid 0 inside); the store inputs themselves read as 65534 here.
    log "standin: unshare -r + cp + mkfs.btrfs"
    # With standin = "bind" (a negative control), bind-mount the store paths
    # instead of copying them: mkfs descends into mounts and records 65534,
    # and run-test must then FAIL.
    unshare -rm sh -eu -c '
        mkdir -p stage/@nix/store stage/@persist stage/@home
        for p in $(cat "$closureInfo/store-paths"); do
            if [ "$standin" = bind ]; then
                mkdir "stage/@nix/store/${p##*/}"
                mount --bind "$p" "stage/@nix/store/${p##*/}"
            else
                cp -RP "$p" stage/@nix/store/
            fi
        done
        cp "$closureInfo/registration" stage/@nix/nix-path-registration
        cp -RP root/persist/. stage/@persist/
        cp -RP root/home/. stage/@home/
        chmod 700 stage/@persist/etc/ssh
        mkfs.btrfs -q -L rootbox-nix-test -b 128M --rootdir stage \
            --subvol rw:@nix --subvol rw:@persist --subvol rw:@home \
            "$out/image.btrfs" >&2
    '
    printf '{"standin":true,"image":"%s/image.btrfs","subvolumes":["@nix","@persist","@home"]}\n' \
        "$out" >"$out/result.json"
elif [ "$via" = spec ]; then
    # What nix/make-btrfs-fs.nix does: a JSON spec, rootfs relative to it.
    cat >spec.json <<SPEC
{
  "filesystem": "btrfs",
  "label": "rootbox-nix-test",
  "size": "auto",
  "rootfs": "./root",
  "closure": "$closureInfo",
  "registration": "/nix/nix-path-registration",
  "storeDir": "/nix/store",
  "subvolumes": [
    {"name": "@nix", "mountpoint": "/nix"},
    {"name": "@persist", "mountpoint": "/persist"},
    {"name": "@home", "mountpoint": "/home"}
  ]
}
SPEC
    cp spec.json "$out/spec.json"
    log "rootbox build --spec spec.json"
    "$rootbox" build --spec ./spec.json --json -o ./image.btrfs >"$out/result.json"
    mv ./image.btrfs "$out/image.btrfs"
else
    # -o is $TMPDIR, then mv: rootbox (as of af116ab) refuses an output
    # inside the store dir ("would be staged into itself"), and $out is.
    log "rootbox build (command-line flags)"
    "$rootbox" build --rootfs ./root --closure "$closureInfo" \
        --subvol @nix:/nix --subvol @persist:/persist --subvol @home:/home \
        --json -o ./image.btrfs >"$out/result.json"
    mv ./image.btrfs "$out/image.btrfs"
fi
ls -l "$out" >&2
