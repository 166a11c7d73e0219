#!/usr/bin/env bash
# Assemble a BIOS-booting disk the way many x86 appliance builds do, with
# kept tools only and no loop mounts (this host has no vfat, no partition
# parsing): an MBR with syslinux's boot code, a FAT boot partition holding
# syslinux, the kernel and the initramfs, and the given ext4 root as
# partition 2.
#
#   scripts/make-bios-image.sh ROOT.ext4 VMLINUZ INITRD OUT.img [APPEND]
#
# APPEND defaults to a serial console and root=/dev/vda2. Needs sfdisk
# (fdisk), mkfs.vfat (dosfstools), mtools, syslinux and syslinux-common.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
root=$1 kernel=$2 initrd=$3 out=$4
append=${5:-"console=ttyS0,115200 root=/dev/vda2 rw rootfstype=ext4 net.ifnames=0 audit=0"}
mbr=/usr/lib/syslinux/mbr/mbr.bin
for t in sfdisk mkfs.vfat mcopy syslinux; do
    command -v "$t" >/dev/null || { echo "make-bios-image: $t is missing (scripts/setup.sh installs it)" >&2; exit 2; }
done
[ -f "$mbr" ] || { echo "make-bios-image: $mbr is missing (install syslinux-common)" >&2; exit 2; }
for f in "$root" "$kernel" "$initrd"; do
    [ -f "$f" ] || { echo "make-bios-image: $f: no such file" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
boot_mib=64
boot=$work/boot.fat
mkfs.vfat -n BOOT -C "$boot" $((boot_mib * 1024)) >/dev/null
cat > "$work/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $append
CFG
mcopy -i "$boot" "$kernel" ::/vmlinuz
mcopy -i "$boot" "$initrd" ::/initrd.img
mcopy -i "$boot" "$work/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$boot"

root_bytes=$(stat -c %s "$root")
root_mib=$(( (root_bytes + (1 << 20) - 1) >> 20 ))
total_mib=$((1 + boot_mib + root_mib))
rm -f "$out"
truncate -s "${total_mib}M" "$out"
sfdisk -q "$out" <<PT
label: dos
start=2048, size=$((boot_mib * 2048)), type=c, bootable
start=$((2048 + boot_mib * 2048)), type=83
PT
dd if="$mbr" of="$out" bs=440 count=1 conv=notrunc status=none
dd if="$boot" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$root" of="$out" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
echo "$out: MBR + syslinux, FAT boot partition (${boot_mib} MiB), ext4 root (${root_mib} MiB)"
