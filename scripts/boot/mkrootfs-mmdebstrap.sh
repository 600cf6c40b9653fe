#!/bin/sh
# A Debian rootfs made the rootless way: `mmdebstrap --mode=unshare`, run as
# the (unprivileged) build user, directory output.  Its files are owned by
# the user's subordinate ids as mmdebstrap maps them: id N in the tree is
# SUBUID_START+N on the host (root = SUBUID_START; the user itself owns
# nothing inside).
#   mkrootfs-mmdebstrap.sh TARGET_DIR PUBKEY LABEL
# Same packages as mkrootfs.sh (plus acl, for getfacl in the guest checks),
# configured by customize.sh as a --customize-hook.
set -eu
target=${1:?usage: mkrootfs-mmdebstrap.sh TARGET PUBKEY LABEL} pub=${2:?} label=${3:?}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${BOOT_MIRROR:-$("$here/../debian-mirror")}
suite=${BOOT_SUITE:-bookworm}
[ "$(id -u)" != 0 ] || { echo "mkrootfs-mmdebstrap.sh: run as the unprivileged build user" >&2; exit 1; }
# single quotes: mmdebstrap runs the hook with sh -c, "$1" = the chroot
exec mmdebstrap --mode=unshare --variant=minbase --format=directory \
    --include=systemd-sysv,udev,dbus,libpam-systemd,openssh-server,iproute2,procps,initramfs-tools,linux-image-amd64,btrfs-progs,zstd,acl \
    --customize-hook="'$here/customize.sh' \"\$1\" '$pub' '$label'" \
    "$suite" "$target" "$mirror"
