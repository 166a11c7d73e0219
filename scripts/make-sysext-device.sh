#!/usr/bin/env bash
# make-sysext-device.sh: build a read-only device image whose system
# extensions live on its writable data partition, the layout of Avocado OS
# (seed 000): an erofs root, a writable /var holding the seeded Docker store
# and /var/lib/extensions, which systemd-sysext merges over /usr at boot.
# For testing that airboot injects its probe through the data partition.
#
# Usage:
#   scripts/make-sysext-device.sh FIXTURE_DIR OUT.img
#
#   FIXTURE_DIR  a preseeded x86_64 fixture folder (disk.qcow2, vmlinuz,
#                initrd.img), e.g. the newest
#                ~/.cache/airboot/fixtures/debian-preseeded-x86_64-*/.
#                Taken from it: the Docker store (/var/lib/docker), its
#                /etc/docker/daemon.json, its container-*.service units, and
#                the kernel with its modules and initramfs.
#   OUT.img      the disk to write (raw, MBR; make-device-image.sh
#                bios-ro-erofs lays it out: syslinux, erofs root on
#                partition 2, ext4 data partition 3 whose var/ is /var).
#
# The root is Debian trixie (mmdebstrap --variant=minbase): systemd 257,
# whose systemd-sysext reloads the service manager after a merge when an
# extension asks for it (EXTENSION_RELOAD_MANAGER=1, systemd >= 255);
# bookworm's 252 cannot, so a unit in an extension would never be seen.
# systemd-sysext.service is enabled, /var/lib/extensions exists (empty),
# docker.io 26 (its CLI is docker-cli from trixie on) with apparmor and
# iptables. The store was written by
# bookworm's Docker 20.10: Docker 26 reads an overlay2 store of that age.
# Nothing of airboot's goes in: any copied text naming airboot is refused.
#
# Needs (apt): mmdebstrap, e2fsprogs (debugfs, mkfs.ext4), qemu-utils
# (qemu-img), and make-device-image.sh's tools (scripts/setup.sh installs
# them). Network access to the Debian mirror (the host's apt mirror, or
# SYSEXT_MIRROR=URL). Runs as root. Works in a temporary folder, removed on
# exit; caches nothing (the caller caches OUT.img).
set -euo pipefail

die() { echo "make-sysext-device: error: $*" >&2; exit 1; }
log() { echo "make-sysext-device: $*" >&2; }

[ $# -eq 2 ] || { sed -n '2,/^set /{/^#/p}' "$0" >&2; exit 2; }
fx=$1 out=$2
for f in disk.qcow2 vmlinuz initrd.img; do
    [ -f "$fx/$f" ] || die "$fx/$f: no such file (FIXTURE_DIR is a preseeded fixture folder)"
done
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root)"
for t in mmdebstrap debugfs mkfs.ext4 qemu-img; do
    command -v "$t" >/dev/null || die "$t is missing (scripts/setup.sh installs it)"
done
mirror=${SYSEXT_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/make-sysext-device.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

log "extracting the store, the stack's units and the kernel's modules from $fx"
qemu-img convert -q -O raw "$fx/disk.qcow2" "$work/fixture.raw" || die "qemu-img convert failed on $fx/disk.qcow2"
dfs() { debugfs -R "$1" "$work/fixture.raw" 2>/dev/null; }
kver=$(dfs "ls -p /lib/modules" | awk -F/ '$6 ~ /^[0-9]/ {print $6; exit}')
[ -n "$kver" ] || die "$fx/disk.qcow2 has no /lib/modules/<version>"
units=$(dfs "ls -p /etc/systemd/system" | awk -F/ '$6 ~ /^container-.*\.service$/ {print $6}')
[ -n "$units" ] || die "$fx/disk.qcow2 has no /etc/systemd/system/container-*.service units"

log "mmdebstrap: Debian trixie with systemd and docker.io from $mirror (2–5 min)"
tree=$work/root
mmdebstrap --quiet --mode=root --variant=minbase --format=directory \
    --include=systemd-sysv,udev,kmod,dbus,procps,docker.io,docker-cli,apparmor,iptables \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    trixie "$tree" "$mirror" >"$work/mmdebstrap.log" 2>&1 \
    || { tail -20 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }

# The fixture's kernel needs its own modules (erofs for the root, overlay
# and netfilter for Docker).
mkdir -p "$tree/usr/lib/modules"
dfs "rdump /lib/modules/$kver $tree/usr/lib/modules" >/dev/null
[ -f "$tree/usr/lib/modules/$kver/modules.dep" ] || die "copying /lib/modules/$kver out of the fixture failed"
# The seeded store, Docker's configuration and the stack's units, enabled.
rm -rf "$tree/var/lib/docker"
dfs "rdump /var/lib/docker $tree/var/lib" >/dev/null
[ -d "$tree/var/lib/docker/image" ] || die "the fixture has no /var/lib/docker/image"
mkdir -p "$tree/etc/docker" "$tree/etc/systemd/system/multi-user.target.wants"
dfs "dump /etc/docker/daemon.json $tree/etc/docker/daemon.json" >/dev/null
for u in $units; do
    dfs "dump /etc/systemd/system/$u $tree/etc/systemd/system/$u" >/dev/null
    sed -i -E 's/[[:space:]]+airboot-[A-Za-z0-9_.-]+\.service//g' "$tree/etc/systemd/system/$u"
    ln -sf "/etc/systemd/system/$u" "$tree/etc/systemd/system/multi-user.target.wants/$u"
done
chmod 0644 "$tree/etc/docker/daemon.json" "$tree"/etc/systemd/system/container-*.service
if grep -ril airboot "$tree/etc/docker" "$tree"/etc/systemd/system/container-*.service >/dev/null; then
    die "refusing to copy airboot-specific text into the image"
fi
rm -f "$work/fixture.raw"
# System extensions from the data partition, merged before sysinit.target.
mkdir -p "$tree/var/lib/extensions" "$tree/etc/systemd/system/sysinit.target.wants"
ln -sf /usr/lib/systemd/system/systemd-sysext.service "$tree/etc/systemd/system/sysinit.target.wants/"
[ -f "$tree/usr/lib/systemd/system/systemd-sysext.service" ] || die "trixie's systemd has no systemd-sysext.service"
# A device: a getty on the serial console (the kernel's console=ttyS0
# starts it), a hostname, no root password.
echo device >"$tree/etc/hostname"
chroot "$tree" passwd -d root >/dev/null
rm -rf "$tree/var/cache/apt"/*.bin "$tree/var/lib/apt/lists"/*_Packages "$tree/var/log"/*.log

mib=$(( $(du -sm "$tree" | cut -f1) * 5 / 4 + 256 ))
mkfs.ext4 -q -L root -d "$tree" "$work/root.ext4" "${mib}M" || die "mkfs.ext4 of the root failed"
rm -rf "$tree"
bash "$(dirname "$0")/make-device-image.sh" bios-ro-erofs "$work/root.ext4" "$fx/vmlinuz" "$fx/initrd.img" "$out"
