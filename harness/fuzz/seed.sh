#!/usr/bin/env bash
# (Re)writes the seeds of the fuzz corpus: the structured ones from
# examples/seed.rs, scenario files, small disks made by the real tools
# (mkfs.ext4 -d, mkfs.fat + mtools, sfdisk, qemu-img), and executables'
# heads. Needs what scripts/setup.sh installs. What cargo-fuzz adds later
# (cmin-minimised) sits beside them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
c=$here/corpus
cargo run -q --manifest-path "$repo/Cargo.toml" -p airboot-fuzz --example seed
mkdir -p "$c"/{scenario,disk,qcow2,exe}
for s in preseeded-x86_64 explore-load-at-boot-x86_64 compose-x86_64; do
  [ -f "$repo/scenarios/$s.toml" ] && cp "$repo/scenarios/$s.toml" "$c/scenario/$s.toml"
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/sbin" "$tmp/root/etc" "$tmp/root/var/lib/docker/image/overlay2"
printf 'ID=debian\n' > "$tmp/root/etc/os-release"
printf '{"Repositories":{}}' > "$tmp/root/var/lib/docker/image/overlay2/repositories.json"
head -c 4096 /bin/true > "$tmp/root/sbin/init"
# A bare ext4 (1 KiB blocks, few inodes) and the same behind a GPT.
truncate -s 192K "$tmp/ext4.raw"
mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,^resize_inode -d "$tmp/root" "$tmp/ext4.raw"
cp "$tmp/ext4.raw" "$c/disk/ext4.raw"
# The same tree as a read-only erofs root (uncompressed, as folders are).
mkfs.erofs --quiet "$c/disk/erofs.raw" "$tmp/root" >/dev/null
truncate -s 128K "$tmp/gpt.raw"
printf 'label: gpt\nstart=40, size=100, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=140, size=40, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n' \
  | sfdisk -q --no-reread --no-tell-kernel "$tmp/gpt.raw" >/dev/null
cp "$tmp/gpt.raw" "$c/disk/gpt.raw"
truncate -s 64K "$tmp/mbr.raw"
printf 'label: dos\nstart=1, size=100, type=83, bootable\n' | sfdisk -q --no-reread --no-tell-kernel "$tmp/mbr.raw" >/dev/null
cp "$tmp/mbr.raw" "$c/disk/mbr.raw"
# A FAT ESP with a loader's path.
mkfs.fat -C "$tmp/esp.raw" 128 >/dev/null
mmd -i "$tmp/esp.raw" ::/EFI ::/EFI/BOOT
printf 'MZ' > "$tmp/BOOTX64.EFI"
mcopy -i "$tmp/esp.raw" "$tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
cp "$tmp/esp.raw" "$c/disk/esp.raw"
# qcow2: the ext4 converted (with and without compression).
qemu-img convert -q -O qcow2 -o cluster_size=4096 "$tmp/ext4.raw" "$c/qcow2/ext4.qcow2"
qemu-img convert -q -c -O qcow2 -o cluster_size=4096 "$tmp/ext4.raw" "$c/qcow2/ext4-compressed.qcow2"
# Executables: an ELF's head, and a PE's if one is on this machine.
head -c 8192 /bin/true > "$c/exe/elf"
for pe in /usr/lib/systemd/boot/efi/systemd-bootx64.efi /usr/lib/shim/shimx64.efi /usr/lib/SYSLINUX.EFI/efi64/syslinux.efi; do
  if [ -f "$pe" ]; then head -c 8192 "$pe" > "$c/exe/pe"; break; fi
done
echo "seeded: $(find "$c" -type f | wc -l) files, $(du -sh "$c" | cut -f1)"
