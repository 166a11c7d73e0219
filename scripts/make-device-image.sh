#!/usr/bin/env bash
# Assemble a whole device disk the way image builds lay them out, with kept
# tools only and no loop mounts (this host has no vfat and no partition
# parsing), from an ext4 root filesystem, a kernel and an initramfs:
#
#   scripts/make-device-image.sh bios         ROOT.ext4 VMLINUZ INITRD OUT.img [APPEND]
#   scripts/make-device-image.sh uefi-uki     ROOT.ext4 VMLINUZ INITRD OUT.img [APPEND]
#   scripts/make-device-image.sh bios-ro-erofs ROOT.ext4 VMLINUZ INITRD OUT.img
#   scripts/make-device-image.sh bios-grub    ROOT.ext4 VMLINUZ INITRD OUT.img [APPEND]
#
# bios:     MBR with syslinux's boot code; partition 1 FAT (syslinux, kernel,
#           initramfs, syslinux.cfg), partition 2 the root. SeaBIOS boots it.
# bios-grub: the same disk with GRUB instead: its boot.img in the MBR, its
#           core.img (grub-mkimage: every module it needs inside, the
#           prefix (hd0,msdos1)/grub) in the gap before partition 1, whose
#           grub/grub.cfg boots the kernel, as grub-install lays out a disk
#           with a /boot partition of its own.
# uefi-uki: GPT; partition 1 the EFI system partition holding one unified
#           kernel image (systemd's EFI stub + kernel + initramfs + command
#           line, joined with objcopy) as EFI/BOOT/BOOTX64.EFI, partition 2
#           the root, typed as an x86-64 Linux root. OVMF boots it.
# bios-ro-erofs: the read-only device layout: partition 2 a read-only erofs
#           root (mkfs.erofs from ROOT's files, /var left empty), partition 3
#           a writable ext4 data partition holding ROOT's var/, mounted at
#           /data, its var/ bind-mounted on /var (so /var/lib/docker, or
#           Podman's /var/lib/containers, is the seeded store) and
#           /etc/docker, if ROOT has one, a link into it. The initramfs
#           gets erofs. debugfs rdump keeps modes and owners, not xattrs.
#
# APPEND defaults to a serial console and root=/dev/vda2. Needs sfdisk
# (fdisk), mkfs.vfat (dosfstools), mtools; bios: syslinux, syslinux-common;
# uefi-uki: objcopy (binutils), systemd-boot-efi; bios-grub: grub-mkimage
# (grub-common), grub-pc-bin; bios-ro-erofs: also
# debugfs (e2fsprogs), mkfs.erofs (erofs-utils), cpio. scripts/setup.sh
# installs them.
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,/^set /{/^#/p}' "$0" >&2; exit 2; }
mode=$1 root=$2 kernel=$3 initrd=$4 out=$5
append=${6:-"console=ttyS0,115200 root=/dev/vda2 rw rootfstype=ext4 net.ifnames=0 audit=0"}
die() { echo "make-device-image: $*" >&2; exit 2; }
need() { for t in "$@"; do command -v "$t" >/dev/null || die "$t is missing (scripts/setup.sh installs it)"; done; }
need sfdisk mkfs.vfat mcopy mmd
ro= loader=syslinux
if [ "$mode" = bios-grub ]; then
    mode=bios loader=grub
fi
if [ "$mode" = bios-ro-erofs ]; then
    mode=bios ro=erofs
    need debugfs mkfs.erofs cpio
    append=${6:-"console=ttyS0,115200 root=/dev/vda2 rootfstype=erofs ro net.ifnames=0 audit=0"}
fi
case $mode in
    bios) if [ "$loader" = grub ]; then
              need grub-mkimage; mbr=/usr/lib/grub/i386-pc/boot.img
              [ -f "$mbr" ] || die "$mbr is missing (install grub-pc-bin)"
          else
              need syslinux; mbr=/usr/lib/syslinux/mbr/mbr.bin; [ -f "$mbr" ] || die "$mbr is missing (install syslinux-common)"
          fi ;;
    uefi-uki) need objcopy; stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub; [ -f "$stub" ] || die "$stub is missing (install systemd-boot-efi)" ;;
    *) die "unknown layout '$mode': bios, bios-grub, bios-ro-erofs or uefi-uki" ;;
esac
for f in "$root" "$kernel" "$initrd"; do
    [ -f "$f" ] || die "$f: no such file"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "$ro" ]; then
    # The root's files, without /var (it lives on the data partition).
    tree=$work/rootfs
    mkdir -p "$tree"
    for e in $(debugfs -R "ls -p /" "$root" 2>/dev/null | awk -F/ '{print $6}'); do
        case $e in ''|.|..|var|lost+found) continue ;; esac
        debugfs -R "rdump /$e $tree" "$root" >/dev/null 2>&1 || die "cannot copy /$e out of $root"
    done
    [ -e "$tree/usr" ] || die "$root does not look like a root filesystem (no /usr)"
    mkdir -p "$tree/var" "$tree/data"
    cat > "$tree/etc/fstab" <<FSTAB
# Read-only erofs root; writable data partition, its var/ on /var; /tmp in memory.
/dev/vda2  /      erofs  ro                  0 0
/dev/vda3  /data  ext4   rw,errors=remount-ro 0 2
/data/var  /var   none   bind                0 0
tmpfs      /tmp   tmpfs  mode=1777,nosuid    0 0
FSTAB
    # dockerd writes /etc/docker/key.json at start: keep /etc/docker
    # writable. (Podman writes nothing under /etc/containers.)
    docker_etc=
    if [ -d "$tree/etc/docker" ]; then
        docker_etc=1
        rm -rf "$tree/etc/docker"
        ln -s /var/lib/docker-etc "$tree/etc/docker"
    fi
    mkfs.erofs --quiet "$work/root.erofs" "$tree" >/dev/null || die "mkfs.erofs failed"
    # The data partition: ROOT's /var (the seeded store) and docker's config.
    datadir=$work/data
    mkdir -p "$datadir"
    debugfs -R "rdump /var $datadir" "$root" >/dev/null 2>&1 || die "cannot copy /var out of $root"
    if [ -n "$docker_etc" ]; then
        mkdir -p "$datadir/var/lib/docker-etc"
        debugfs -R "cat /etc/docker/daemon.json" "$root" 2>/dev/null > "$datadir/var/lib/docker-etc/daemon.json"
    fi
    data=$work/data.ext4
    data_mib=$(( $(du -sm "$datadir" | cut -f1) + 512 ))
    mkfs.ext4 -q -L data -d "$datadir" "$data" "${data_mib}M" || die "mkfs.ext4 of the data partition failed"
    # The initramfs loads what etc/modules.order lists: add erofs (and the
    # crc32c library it needs) from the root's own modules.
    kver=$(debugfs -R "ls -p /lib/modules" "$root" 2>/dev/null | awk -F/ '$6 ~ /^[0-9]/ {print $6; exit}')
    [ -n "$kver" ] || die "no /lib/modules/<version> in $root"
    extra=$work/initrd-extra
    mkdir -p "$extra/etc" "$extra/lib/modules/$kver/kernel/lib" "$extra/lib/modules/$kver/kernel/fs/erofs"
    for m in lib/libcrc32c.ko fs/erofs/erofs.ko; do
        debugfs -R "dump /lib/modules/$kver/kernel/$m $extra/lib/modules/$kver/kernel/$m" "$root" >/dev/null 2>&1
        [ -s "$extra/lib/modules/$kver/kernel/$m" ] || die "$root has no /lib/modules/$kver/kernel/$m"
    done
    (cpio -i --quiet --to-stdout etc/modules.order < "$initrd"; \
        printf '%s\n' "$kver/kernel/lib/libcrc32c.ko" "$kver/kernel/fs/erofs/erofs.ko") > "$extra/etc/modules.order"
    cp "$initrd" "$work/initrd.img"
    (cd "$extra" && find . | cpio -o -H newc --quiet) >> "$work/initrd.img"
    initrd=$work/initrd.img
fi
boot_mib=64
boot=$work/boot.fat
mkfs.vfat -F 32 -n BOOT -C "$boot" $((boot_mib * 1024)) >/dev/null
if [ "$loader" = grub ]; then
    cat > "$work/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set default=0
set timeout=0
menuentry 'Linux' {
    linux /vmlinuz $append
    initrd /initrd.img
}
CFG
    mcopy -i "$boot" "$kernel" ::/vmlinuz
    mcopy -i "$boot" "$initrd" ::/initrd.img
    mmd -i "$boot" ::/grub
    mcopy -i "$boot" "$work/grub.cfg" ::/grub/grub.cfg
    # Everything GRUB needs is inside core.img: the partition holds no modules.
    grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/grub' \
        biosdisk part_msdos fat normal linux serial terminal configfile echo
    # boot.img loads core.img from sector 1, and core.img's first sector the
    # rest from sector 2 on, as grub-mkimage lays it out: it must fit the gap.
    [ "$(stat -c %s "$work/core.img")" -le $((2047 * 512)) ] || die "GRUB's core.img does not fit before partition 1"
elif [ "$mode" = bios ]; then
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

mib_of() { echo $(( ($(stat -c %s "$1") + (1 << 20) - 1) >> 20 )); }
data_mib=0
if [ -n "$ro" ]; then
    data_mib=$(mib_of "$data")
    root=$work/root.erofs
fi
root_mib=$(mib_of "$root")
total_mib=$((1 + boot_mib + root_mib + data_mib + 1))   # + 1 MiB for a backup GPT
rm -f "$out"
truncate -s "${total_mib}M" "$out"
if [ "$mode" = bios ]; then
    table="label: dos
start=2048, size=$((boot_mib * 2048)), type=c, bootable
start=$((2048 + boot_mib * 2048)), size=$((root_mib * 2048)), type=83"
    [ -n "$ro" ] && table="$table
start=$((2048 + (boot_mib + root_mib) * 2048)), size=$((data_mib * 2048)), type=83"
else
    table="label: gpt
first-lba: 2048
start=2048, size=$((boot_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"
start=$((2048 + boot_mib * 2048)), size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"root\""
fi
echo "$table" | sfdisk -q --no-reread --no-tell-kernel "$out"
[ "$mode" = bios ] && dd if="$mbr" of="$out" bs=440 count=1 conv=notrunc status=none
[ "$loader" = grub ] && dd if="$work/core.img" of="$out" bs=512 seek=1 conv=notrunc status=none
dd if="$boot" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$root" of="$out" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
if [ -n "$ro" ]; then
    dd if="$data" of="$out" bs=1M seek=$((1 + boot_mib + root_mib)) conv=notrunc,sparse status=none
    echo "$out: $mode, boot partition ${boot_mib} MiB, read-only erofs root ${root_mib} MiB, ext4 data ${data_mib} MiB"
else
    echo "$out: $mode ($loader), boot partition ${boot_mib} MiB, ext4 root ${root_mib} MiB"
fi
