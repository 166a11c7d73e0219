#!/usr/bin/env bash
# Assemble a whole device disk the way image builds lay them out, with kept
# tools only and no loop mounts (this host has no vfat and no partition
# parsing), from an ext4 root filesystem, a kernel and an initramfs:
#
#   scripts/make-device-image.sh bios     ROOT.ext4 VMLINUZ INITRD OUT.img [APPEND]
#   scripts/make-device-image.sh uefi-uki ROOT.ext4 VMLINUZ INITRD OUT.img [APPEND]
#
# bios:     MBR with syslinux's boot code; partition 1 FAT (syslinux, kernel,
#           initramfs, syslinux.cfg), partition 2 the root. SeaBIOS boots it.
# uefi-uki: GPT; partition 1 the EFI system partition holding one unified
#           kernel image (systemd's EFI stub + kernel + initramfs + command
#           line, joined with objcopy) as EFI/BOOT/BOOTX64.EFI, partition 2
#           the root, typed as an x86-64 Linux root. OVMF boots it.
#
# APPEND defaults to a serial console and root=/dev/vda2. Needs sfdisk
# (fdisk), mkfs.vfat (dosfstools), mtools; bios: syslinux, syslinux-common;
# uefi-uki: objcopy (binutils), systemd-boot-efi. scripts/setup.sh installs them.
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
mode=$1 root=$2 kernel=$3 initrd=$4 out=$5
append=${6:-"console=ttyS0,115200 root=/dev/vda2 rw rootfstype=ext4 net.ifnames=0 audit=0"}
die() { echo "make-device-image: $*" >&2; exit 2; }
need() { for t in "$@"; do command -v "$t" >/dev/null || die "$t is missing (scripts/setup.sh installs it)"; done; }
need sfdisk mkfs.vfat mcopy mmd
case $mode in
    bios) need syslinux; mbr=/usr/lib/syslinux/mbr/mbr.bin; [ -f "$mbr" ] || die "$mbr is missing (install syslinux-common)" ;;
    uefi-uki) need objcopy; stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub; [ -f "$stub" ] || die "$stub is missing (install systemd-boot-efi)" ;;
    *) die "unknown layout '$mode': bios or uefi-uki" ;;
esac
for f in "$root" "$kernel" "$initrd"; do
    [ -f "$f" ] || die "$f: no such file"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
boot_mib=64
boot=$work/boot.fat
mkfs.vfat -F 32 -n BOOT -C "$boot" $((boot_mib * 1024)) >/dev/null
if [ "$mode" = bios ]; then
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
else
    printf '%s' "$append" > "$work/cmdline"
    printf 'ID=debian\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n' > "$work/os-release"
    # The classic section addresses for systemd 252's stub (it ends below 0x20000).
    objcopy \
        --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
        --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
        --add-section .linux="$kernel" --change-section-vma .linux=0x2000000 \
        --add-section .initrd="$initrd" --change-section-vma .initrd=0x3000000 \
        "$stub" "$work/uki.efi"
    mmd -i "$boot" ::/EFI ::/EFI/BOOT
    mcopy -i "$boot" "$work/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
fi

root_bytes=$(stat -c %s "$root")
root_mib=$(( (root_bytes + (1 << 20) - 1) >> 20 ))
total_mib=$((1 + boot_mib + root_mib + 1))   # + 1 MiB for a backup GPT
rm -f "$out"
truncate -s "${total_mib}M" "$out"
if [ "$mode" = bios ]; then
    table="label: dos
start=2048, size=$((boot_mib * 2048)), type=c, bootable
start=$((2048 + boot_mib * 2048)), size=$((root_mib * 2048)), type=83"
else
    table="label: gpt
first-lba: 2048
start=2048, size=$((boot_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"
start=$((2048 + boot_mib * 2048)), size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"root\""
fi
echo "$table" | sfdisk -q --no-reread --no-tell-kernel "$out"
[ "$mode" = bios ] && dd if="$mbr" of="$out" bs=440 count=1 conv=notrunc status=none
dd if="$boot" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$root" of="$out" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
echo "$out: $mode, boot partition ${boot_mib} MiB, ext4 root ${root_mib} MiB"
