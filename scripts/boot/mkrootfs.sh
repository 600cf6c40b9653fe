#!/bin/bash
# Build the cached Debian rootfs for scripts/boot-test.  Runs as root.
#   mkrootfs.sh CACHE_DIR
# Produces (all under CACHE_DIR):
#   key/id_ed25519{,.pub}   test ssh key (root and alice trust it)
#   rootfs/                 debootstrap tree, root-owned, configured
#   kernel/vmlinuz kernel/initrd.img   taken from rootfs/boot (built inside it)
#   rootfs.stamp            written last; its presence means "complete"
set -euo pipefail
cache=${1:?usage: mkrootfs.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${BOOT_MIRROR:-$("$here/../debian-mirror")}
suite=${BOOT_SUITE:-bookworm}
label=${BOOT_LABEL:-rootbox-boot}
log() { printf '[mkrootfs] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root (debootstrap)"; exit 1; }
mkdir -p "$cache/key" "$cache/kernel" "$cache/debs"

if [ ! -s "$cache/key/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -C rootbox-boot-test -f "$cache/key/id_ed25519"
fi
pub=$(cat "$cache/key/id_ed25519.pub")

root=$cache/rootfs
rm -f "$cache/rootfs.stamp"
rm -rf "$root" "$root.tmp"
t0=$(date +%s)
log "debootstrap $suite (minbase) into $root.tmp"
debootstrap --variant=minbase \
    --include=systemd-sysv,udev,dbus,libpam-systemd,openssh-server,iproute2,procps,initramfs-tools,linux-image-amd64,btrfs-progs,zstd \
    --cache-dir="$cache/debs" "$suite" "$root.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -30 "$cache/debootstrap.log" >&2; log "debootstrap failed (log: $cache/debootstrap.log)"; exit 1; }
t1=$(date +%s)
log "debootstrap took $((t1 - t0)) s"
r=$root.tmp

echo rootbox-boot >"$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\trootbox-boot\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
sed "s/@LABEL@/$label/g" "$here/fstab.in" >"$r/etc/fstab"
# fresh machine-id on first boot
: >"$r/etc/machine-id"; rm -f "$r/var/lib/dbus/machine-id"

# network: systemd-networkd, DHCP on any ethernet NIC (qemu user net, virtio)
install -m 0644 "$here/20-wired.network" "$r/etc/systemd/network/20-wired.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$r/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$r/etc/systemd/system/sockets.target.wants"
ln -sf /lib/systemd/system/systemd-networkd.socket "$r/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
# serial console login is handy when inspecting with --keep
mkdir -p "$r/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/serial-getty@.service "$r/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

# sshd: keep defaults (StrictModes yes, PermitRootLogin prohibit-password);
# only make it fail fast on DNS.
printf 'UseDNS no\n' >"$r/etc/ssh/sshd_config.d/rootbox-boot.conf"

# root's key
install -d -m 0700 "$r/root/.ssh"
printf '%s\n' "$pub" >"$r/root/.ssh/authorized_keys"; chmod 0600 "$r/root/.ssh/authorized_keys"

# alice, uid 1000, with her own key file
chroot "$r" useradd -m -u 1000 -U -s /bin/bash alice
install -d -m 0700 -o 1000 -g 1000 "$r/home/alice/.ssh"
printf '%s\n' "$pub" >"$r/home/alice/.ssh/authorized_keys"
chown 1000:1000 "$r/home/alice/.ssh/authorized_keys"; chmod 0600 "$r/home/alice/.ssh/authorized_keys"

# content for the /srv subvolume, checked after boot
echo "rootbox boot test" >"$r/srv/rootbox-marker"

# initrd built inside the rootfs; make sure it has what the boot needs
cat >"$r/etc/initramfs-tools/conf.d/rootbox-boot.conf" <<'CONF'
MODULES=most
COMPRESS=zstd
CONF
printf 'btrfs\nvirtio_pci\nvirtio_blk\nvirtio_net\n' >>"$r/etc/initramfs-tools/modules"
kver=$(ls "$r/lib/modules" | sort -V | tail -1)
mount -t proc proc "$r/proc"
trap 'umount "$r/proc" 2>/dev/null || true' EXIT
chroot "$r" update-initramfs -u -k "$kver" >"$cache/update-initramfs.log" 2>&1 \
    || { cat "$cache/update-initramfs.log" >&2; exit 1; }
umount "$r/proc"; trap - EXIT
chroot "$r" apt-get clean
rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin

cp "$r/boot/vmlinuz-$kver" "$cache/kernel/vmlinuz"
cp "$r/boot/initrd.img-$kver" "$cache/kernel/initrd.img"
missing=
contents=$(lsinitramfs "$cache/kernel/initrd.img")
for m in btrfs.ko virtio_blk.ko virtio_pci.ko virtio_net.ko; do
    grep -q "/$m" <<<"$contents" || missing="$missing $m"
done
[ -z "$missing" ] || { log "initrd lacks:$missing"; exit 1; }

mv "$r" "$root"
{ echo "suite=$suite"; echo "kernel=$kver"; echo "debootstrap_seconds=$((t1 - t0))"; echo "built=$(date -Is)"; } >"$cache/rootfs.stamp"
log "rootfs ready: $root (kernel $kver, total $(( $(date +%s) - t0 )) s)"
