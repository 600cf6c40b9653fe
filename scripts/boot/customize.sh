#!/bin/sh
# Configure a freshly bootstrapped Debian tree for scripts/boot-test: the
# same steps as mkrootfs.sh after debootstrap, for trees made otherwise.
#   customize.sh ROOT PUBKEY LABEL [CONSOLE [INITRAMFS]]
# Used as an mmdebstrap --customize-hook (mkrootfs-mmdebstrap.sh), where it
# runs as root inside mmdebstrap's user namespace (`chroot` works there; the
# files it creates get mmdebstrap's subordinate ids on the host), and by
# mkrootfs-arm64.sh.  CONSOLE: the serial port a getty runs on (ttyS0;
# arm64 virt: ttyAMA0).  INITRAMFS: yes (update-initramfs in the tree) or
# no (the arm64 tree: its initrd is made on the host, scripts/boot/initrd).
set -eu
r=${1:?usage: customize.sh ROOT PUBKEY LABEL [CONSOLE [INITRAMFS]]} pub=${2:?} label=${3:?}
console=${4:-ttyS0} initramfs=${5:-yes}
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[customize] %s\n' "$*" >&2; }

echo rootbox-boot >"$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\trootbox-boot\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
sed "s/@LABEL@/$label/g" "$here/fstab.in" >"$r/etc/fstab"
: >"$r/etc/machine-id"; rm -f "$r/var/lib/dbus/machine-id"

install -m 0644 "$here/20-wired.network" "$r/etc/systemd/network/20-wired.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$r/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$r/etc/systemd/system/sockets.target.wants" "$r/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/systemd-networkd.socket "$r/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
ln -sf /lib/systemd/system/serial-getty@.service "$r/etc/systemd/system/getty.target.wants/serial-getty@$console.service"
printf 'UseDNS no\n' >"$r/etc/ssh/sshd_config.d/rootbox-boot.conf"

install -d -m 0700 "$r/root/.ssh"
printf '%s\n' "$pub" >"$r/root/.ssh/authorized_keys"; chmod 0600 "$r/root/.ssh/authorized_keys"

chroot "$r" useradd -m -u 1000 -U -s /bin/bash alice
install -d -m 0700 -o 1000 -g 1000 "$r/home/alice/.ssh"
printf '%s\n' "$pub" >"$r/home/alice/.ssh/authorized_keys"
chown 1000:1000 "$r/home/alice/.ssh/authorized_keys"; chmod 0600 "$r/home/alice/.ssh/authorized_keys"

echo "rootbox boot test" >"$r/srv/rootbox-marker"

kver=$(ls "$r/lib/modules" | sort -V | tail -1)
if [ "$initramfs" = yes ]; then
    printf 'MODULES=most\nCOMPRESS=zstd\n' >"$r/etc/initramfs-tools/conf.d/rootbox-boot.conf"
    printf 'btrfs\nvirtio_pci\nvirtio_blk\nvirtio_net\n' >>"$r/etc/initramfs-tools/modules"
    mounted=
    if [ ! -e "$r/proc/self" ]; then mount -t proc proc "$r/proc"; mounted=1; fi
    chroot "$r" update-initramfs -u -k "$kver" >&2
    [ -z "$mounted" ] || umount "$r/proc"
fi
chroot "$r" apt-get clean
rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin
log "done (kernel $kver)"
