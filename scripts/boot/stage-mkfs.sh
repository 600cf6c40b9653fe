#!/bin/bash
# Lay out a rootfs as top-level subvolume directories and run mkfs.btrfs.
#   stage-mkfs.sh ROOTFS STAGE OUT LABEL HEADROOM_MIB
# Layout (must match fstab.in):  @ -> /  (default), @home -> /home,
# @log -> /var/log, @srv -> /srv.  Each subvolume gets the rootfs content
# under its mountpoint; the mountpoints stay in @ as empty directories.
#
# Runs with whatever credentials it is given: under `unshare -r` (the
# stand-in for `rootbox build`) the caller is uid 0 in the namespace and the
# image records root; without a namespace (the contrast build) the image
# records the caller's uid.  It never needs privileges.
set -euo pipefail
src=${1:?} stage=${2:?} out=${3:?} label=${4:?} headroom_mib=${5:-512}
log() { printf '[stage-mkfs] %s\n' "$*" >&2; }
log "uid=$(id -u) gid=$(id -g) ($(awk '/^CapEff/{print "CapEff=" $2}' /proc/self/status)); uid_map: $(tr -s ' ' </proc/self/uid_map | tr '\n' ';')"

rm -rf "$stage"; mkdir -p "$stage"
# A POSIX ACL naming an id outside this namespace's map (Debian's
# /var/log/journal names group adm) cannot be written back here: cp reports
# EINVAL and leaves the ACL off.  Tolerate exactly that (tmpfiles puts the
# journal ACL back at boot) and fail on anything else.
if ! cp -a --reflink=auto "$src" "$stage/@" 2>"$stage.cp.err"; then
    if grep -qv "^cp: preserving permissions for '.*': Invalid argument$" "$stage.cp.err"; then
        cat "$stage.cp.err" >&2; log "copy failed"; exit 1
    fi
    sed "s/^cp: preserving permissions for '\(.*\)': Invalid argument$/dropped an ACL naming an unmapped id: \1/" "$stage.cp.err" |
        while read -r l; do log "$l"; done
fi
rm -f "$stage.cp.err"
# name  mountpoint (relative to /)
while read -r sv mp; do
    mkdir "$stage/$sv"
    # the subvolume root becomes the mountpoint's directory: same mode/times
    chmod --reference="$stage/@/$mp" "$stage/$sv"
    # move the contents (dotfiles too) out of @, leaving an empty mountpoint
    find "$stage/@/$mp" -mindepth 1 -maxdepth 1 -exec mv -t "$stage/$sv" {} +
    touch -r "$stage/@/$mp" "$stage/$sv"
done <<'LAYOUT'
@home home
@log var/log
@srv srv
LAYOUT

used=$(du -sx --block-size=1M "$stage" | cut -f1)
size_mib=$(( used * 13 / 10 + headroom_mib + 64 ))
rm -f "$out"; truncate -s "${size_mib}M" "$out"
log "staged ${used} MiB, image ${size_mib} MiB"
mkfs.btrfs -q -f -L "$label" --rootdir "$stage" \
    --subvol default:@ --subvol rw:@home --subvol rw:@log --subvol rw:@srv \
    "$out"
rm -rf "$stage"
log "wrote $out"
