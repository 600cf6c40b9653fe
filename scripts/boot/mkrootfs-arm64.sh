#!/bin/bash
# The arm64 Debian tree of `scripts/boot-test --arch arm64`, made on this
# (x86-64) machine by mmdebstrap through binfmt emulation.  Runs as root.
#   mkrootfs-arm64.sh TARGET_DIR PARTS_DIR PUBKEY LABEL
# TARGET_DIR: the tree (bookworm minbase, the x86 tree's packages with
#   linux-image-arm64, and fdisk for the first-boot growth), configured by
#   customize.sh (getty on ttyAMA0).
# PARTS_DIR: busybox-static and grub-efi-arm64-bin (arm64 builds) extracted,
#   not installed (mmdebstrap --variant=extract: nothing runs emulated), for
#   the initrd and the standalone GRUB the harness makes natively.
#
# Under qemu-user every maintainer script runs emulated, and the slowest of
# them is initramfs generation (an emulated modprobe per module: 14 min for
# one mkinitramfs here, and a dpkg trigger runs it again).  So the tree makes
# none: update-initramfs is diverted to a no-op while packages are installed
# (and put back at the end), and the harness builds a small initrd on the
# host (scripts/boot/harness/initrd.py).  The ssh host keys are made by the
# host's ssh-keygen before openssh-server is installed (its postinst keeps
# existing keys), and docs, man pages and locales are not unpacked.
set -euo pipefail
target=${1:?usage: mkrootfs-arm64.sh TARGET PARTS PUBKEY LABEL} parts=${2:?} pub=${3:?} label=${4:?}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${BOOT_MIRROR:-$("$here/../debian-mirror")}
suite=${BOOT_SUITE:-bookworm}
log() { printf '[mkrootfs-arm64] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

# binfmt: qemu-aarch64 for every arm64 ELF (flag F: the interpreter is opened
# now, so it works inside the chroot too).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || { log "no $conf (apt-get install qemu-user-static)"; exit 1; }
    grep -v '^#' "$conf" >/proc/sys/fs/binfmt_misc/register
    log "registered qemu-aarch64 with binfmt_misc ($conf)"
fi

# qemu-user's default CPU (max) emulates pointer authentication, which
# Debian's arm64 binaries use at every function entry (branch protection);
# a Cortex-A57 has none, so those instructions are no-ops: an emulated perl
# loop took 1.29 s of CPU instead of 1.97 s here.
export QEMU_CPU=cortex-a57

rm -rf "$parts"
t0=$(date +%s)
mmdebstrap --mode=root --arch=arm64 --variant=extract --include=busybox-static,grub-efi-arm64-bin \
    --skip=cleanup/apt "$suite" "$parts" "$mirror" >&2
log "boot parts extracted in $(( $(date +%s) - t0 )) s"

rm -rf "$target"
t0=$(date +%s)
# (patterns for dpkg, not for this shell: quoted)
nodoc=()
for d in doc man info locale; do nodoc+=("--dpkgopt=path-exclude=/usr/share/$d/*"); done
mmdebstrap --mode=root --arch=arm64 --variant=minbase \
    --include=systemd-sysv,udev,dbus,libpam-systemd,openssh-server,iproute2,procps,linux-image-arm64,btrfs-progs,zstd,fdisk \
    "${nodoc[@]}" "--dpkgopt=path-include=/usr/share/doc/*/copyright" \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.rootbox --add /usr/sbin/update-initramfs'"
        printf '#!/bin/sh\n# scripts/boot/mkrootfs-arm64.sh: no initramfs under emulation\nexit 0\n' >\"\$1/usr/sbin/update-initramfs\"
        chmod 0755 \"\$1/usr/sbin/update-initramfs\"
        mkdir -p \"\$1/etc/ssh\" && ssh-keygen -A -f \"\$1\"" \
    --customize-hook="'$here/customize.sh' \"\$1\" '$pub' '$label' ttyAMA0 no" \
    --customize-hook='rm "$1/usr/sbin/update-initramfs"
        chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
    "$suite" "$target" "$mirror" >&2
secs=$(( $(date +%s) - t0 ))
[ -x "$target/usr/sbin/update-initramfs" ] && ! grep -q 'no initramfs under emulation' "$target/usr/sbin/update-initramfs" \
    || { log "update-initramfs was not put back in $target"; exit 1; }
ls "$target"/boot/initrd.img-* >/dev/null 2>&1 && { log "an initrd was made under emulation"; exit 1; }
log "emulated mmdebstrap took $secs s"
echo "$secs"
