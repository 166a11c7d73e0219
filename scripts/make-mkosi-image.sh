#!/usr/bin/env bash
# make-mkosi-image.sh: build a device image the way a third-party image
# builder produces it, with mkosi 14 (Debian bookworm's package), for
# testing airboot against images it did not lay out itself.
#
# Usage:
#   scripts/make-mkosi-image.sh FIXTURE_DISK.qcow2 OUT.raw
#
#   FIXTURE_DISK.qcow2  a preseeded fixture disk (whole-disk ext4 in qcow2,
#                       e.g. the newest
#                       ~/.cache/airboot/fixtures/debian-preseeded-x86_64-*/disk.qcow2).
#                       Only its Docker store (/var/lib/docker), its
#                       /etc/docker/daemon.json and its container-*.service
#                       units are taken.
#   OUT.raw             the image to write (raw, GPT).
#
# What it builds: Distribution=debian, Release=bookworm, Format=gpt_ext4,
# Bootable=yes (UEFI: systemd-boot + a unified kernel image made by mkosi
# with objcopy from linux-image-amd64 and a dracut initrd), root found by
# GPT auto-discovery, kernel command line "console=ttyS0,115200" (a getty on
# ttyS0), root password "root", docker.io, and a pre-seeded Docker store
# copied in with ExtraTrees=, its containers started at boot by the same
# systemd units the fixture uses. Two things a plain mkosi image gets wrong
# for this stack: Debian's kernel has AppArmor on, and docker.io only
# Recommends apparmor (mkosi installs without recommends), so every
# `docker run` fails ("apparmor_parser: executable file not found"): the
# apparmor package is listed explicitly. And systemd-networkd-wait-online
# would hold docker back 2 minutes on a device with no network: masked.
# Nothing of airboot's goes into the image (no probe, no probe unit, no
# reporter); any unit text naming airboot is rejected.
#
# Why the shims: this host's kernel has no vfat module and no partition-table
# parsing. mkosi 14 adds the loop partitions itself (BLKPG ioctls, so that
# part works), formats the ESP with mkfs.fat (works) and then mounts it, which
# fails. So mkosi runs with ExtraSearchPaths= pointing at three shims:
#   mount          a vfat block device is "mounted" by copying its contents
#                  out with mtools into a staging directory and bind-mounting
#                  that; anything else goes to the real mount.
#   umount         before unmounting a staged ESP (or a tree containing one),
#                  the FAT is re-made (same label and volume id) and the
#                  staged tree is copied back with mcopy.
#   systemd-nspawn adds SYSTEMD_RELAX_ESP_CHECKS=1, since bootctl (run in the
#                  image) cannot see a vfat file system on a bind mount.
# On a host with vfat, mount and umount pass straight through. And mkosi runs
# with --nspawn-keep-unit: without a systemd system bus on the host,
# systemd-nspawn cannot allocate a scope ("Failed to open system bus").
#
# Caches nothing (the caller caches OUT.raw). Works in a temporary directory
# that is removed on exit; mkosi works in its own mount namespace, and loop
# devices still attached to the temporary image on exit are detached.
#
# Needs (apt): mkosi (pulls debootstrap, systemd-container, dosfstools),
# mtools, e2fsprogs (debugfs), qemu-utils (qemu-img), binutils (objcopy).
# Network access to the Debian mirror (default: the host's apt mirror,
# override with MKOSI_MIRROR=URL). Runs as root.
set -euo pipefail

die() { echo "make-mkosi-image: error: $*" >&2; exit 1; }
log() { echo "make-mkosi-image: $*" >&2; }

[ $# -eq 2 ] || die "usage: $0 FIXTURE_DISK.qcow2 OUT.raw"
fixture=$1
out=$2
[ -f "$fixture" ] || die "fixture disk not found: $fixture"
[ "$(id -u)" -eq 0 ] || die "must run as root (mkosi needs loop devices, mounts and systemd-nspawn)"

need() {
    command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' (apt-get install -y $2)"
}
need mkosi mkosi
need debootstrap debootstrap
need systemd-nspawn systemd-container
need mkfs.fat dosfstools
need mcopy mtools
need mdir mtools
need debugfs e2fsprogs
need mkfs.ext4 e2fsprogs
need qemu-img qemu-utils
need objcopy binutils
need blkid util-linux
need losetup util-linux
need sfdisk fdisk
need tar tar
ver=$(mkosi --version 2>/dev/null | awk '{print $2}')
[ "${ver%%.*}" = 14 ] || log "warning: written for mkosi 14, found '${ver:-unknown}'"

# The Debian mirror: MKOSI_MIRROR, else the host's apt mirror, else deb.debian.org.
host_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        grep -vE '^[[:space:]]*#' "$f" | grep -hoE '(https?://[^ ]+/debian)/?( |$)' | awk '{print $1}' | sed 's,/$,,' | head -1
    done | head -1
}
mirror=${MKOSI_MIRROR:-$(host_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}

out_dir=$(cd "$(dirname "$out")" && pwd) || die "output directory does not exist: $(dirname "$out")"
out="$out_dir/$(basename "$out")"
fixture=$(readlink -f "$fixture")

work=$(mktemp -d /var/tmp/make-mkosi-image.XXXXXX)
cleanup() {
    local rc=$? dev
    set +e
    # Loop devices still backed by files under our work dir (mkosi normally
    # detaches its own; this covers a killed or failed build).
    while read -r dev; do
        [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
    done < <(losetup -a 2>/dev/null | grep -F "$work" | cut -d: -f1)
    # Mounts under the work dir (mkosi mounts in its own namespace, so there
    # should be none in ours).
    findmnt -rn -o TARGET 2>/dev/null | grep -F "$work" | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done || true
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# 1. Take the Docker store and the stack's units out of the fixture disk.
log "extracting /var/lib/docker and the stack's units from $fixture"
qemu-img convert -q -O raw "$fixture" "$work/fixture.raw" || die "qemu-img convert failed on $fixture"
dfs() { debugfs -R "$1" "$work/fixture.raw" 2>/dev/null; }
dfs "stat /var/lib/docker" | grep -q 'Type: directory' \
    || die "$fixture has no /var/lib/docker (is it a whole-disk ext4 preseeded fixture?)"

store="$work/store"
mkdir -p "$store/var/lib"
# debugfs rdump keeps modes, owners and times (the fixture's store has no
# xattrs and no whiteout devices; overlay2 needs neither here).
dfs "rdump /var/lib/docker $store/var/lib" >/dev/null
[ -d "$store/var/lib/docker/image" ] || die "debugfs rdump of /var/lib/docker produced no image/ directory"
# mkosi copies directory extra trees without owners; a tar archive is
# unpacked with them (numeric owners, so the host's user names don't matter).
tar --numeric-owner -C "$store" -cf "$work/docker-store.tar" var
rm -rf "$store"

etc="$work/etc-tree"
mkdir -p "$etc/etc/docker" "$etc/etc/systemd/system"
dfs "dump /etc/docker/daemon.json $etc/etc/docker/daemon.json" >/dev/null
[ -s "$etc/etc/docker/daemon.json" ] || die "$fixture has no /etc/docker/daemon.json"
units=$(dfs "ls -p /etc/systemd/system" | awk -F/ '$6 ~ /^container-.*\.service$/ {print $6}')
[ -n "$units" ] || die "$fixture has no /etc/systemd/system/container-*.service units"
for u in $units; do
    dfs "dump /etc/systemd/system/$u $etc/etc/systemd/system/$u" >/dev/null
    # The fixture orders its units after an airboot image loader; that unit
    # does not exist in a third-party image, so drop the name.
    sed -i -E 's/[[:space:]]+airboot-[A-Za-z0-9_.-]+\.service//g' "$etc/etc/systemd/system/$u"
done
chmod 0644 "$etc"/etc/docker/daemon.json "$etc"/etc/systemd/system/*.service
if grep -ril airboot "$etc" >/dev/null; then
    die "refusing to copy airboot-specific text into the image: $(grep -ril airboot "$etc" | tr '\n' ' ')"
fi
rm -f "$work/fixture.raw"
log "stack units: $(echo $units)"

# ---------------------------------------------------------------------------
# 2. The shims (see the header).
shims="$work/shims"
state="$work/vfat-state"
mkdir -p "$shims" "$state"

cat >"$shims/mount" <<EOF
#!/bin/bash
# mkosi shim: stage a vfat mount through mtools on a host without vfat.
set -euo pipefail
REAL=/usr/bin/mount
STATE='$state'
EOF
cat >>"$shims/mount" <<'EOF'
export MTOOLS_SKIP_CHECK=1
grep -qw vfat /proc/filesystems && exec "$REAL" "$@"
pos=(); skip=0
for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case $a in
        -o|--options|-t|--types|-O|--test-opts|-L|--label|-U|--uuid|-N|--namespace) skip=1 ;;
        -*) ;;
        *) pos+=("$a") ;;
    esac
done
if [ "${#pos[@]}" -eq 2 ] && [ -b "${pos[0]}" ] \
   && [ "$(blkid -p -o value -s TYPE "${pos[0]}" 2>/dev/null)" = vfat ]; then
    dev=${pos[0]}
    target=$(readlink -f "${pos[1]}")
    key=$(printf '%s' "$target" | sha1sum | cut -c1-16)
    d="$STATE/$key"
    rm -rf "$d"; mkdir -p "$d/tree"
    printf '%s\n' "$dev" >"$d/dev"
    printf '%s\n' "$target" >"$d/target"
    if mdir -i "$dev" -b ::/ 2>/dev/null | grep -q .; then
        mcopy -s -p -m -Q -n -i "$dev" '::/*' "$d/tree/"
    fi
    echo "mount-shim: staged vfat $dev at $target via $d/tree" >&2
    exec "$REAL" --no-mtab --bind "$d/tree" "$target"
fi
exec "$REAL" "$@"
EOF

cat >"$shims/umount" <<EOF
#!/bin/bash
# mkosi shim: write a staged vfat mount back to its device before unmounting.
set -euo pipefail
REAL=/usr/bin/umount
STATE='$state'
EOF
cat >>"$shims/umount" <<'EOF'
export MTOOLS_SKIP_CHECK=1
pos=(); skip=0
for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case $a in
        -t|--types|-O|--test-opts|-N|--namespace) skip=1 ;;
        -*) ;;
        *) pos+=("$a") ;;
    esac
done
done_dirs=()
for p in "${pos[@]}"; do
    rp=$(readlink -f "$p" 2>/dev/null || printf '%s' "$p")
    for d in "$STATE"/*/; do
        [ -f "$d/target" ] || continue
        t=$(cat "$d/target")
        case $t in
            "$rp"|"$rp"/*) ;;
            *) continue ;;
        esac
        dev=$(cat "$d/dev")
        label=$(blkid -p -o value -s LABEL "$dev" 2>/dev/null || true)
        volid=$(blkid -p -o value -s UUID "$dev" 2>/dev/null | tr -d '-' || true)
        args=(-F 32)
        [ -n "$label" ] && args+=(-n "$label")
        [ -n "$volid" ] && args+=(-i "$volid")
        mkfs.fat "${args[@]}" "$dev" >/dev/null
        shopt -s nullglob dotglob
        files=("$d"tree/*)
        shopt -u nullglob dotglob
        if [ "${#files[@]}" -gt 0 ]; then
            mcopy -s -p -m -Q -i "$dev" "${files[@]}" ::/
        fi
        echo "umount-shim: wrote $t back to vfat $dev" >&2
        done_dirs+=("$d")
    done
done
"$REAL" "$@"
for d in "${done_dirs[@]}"; do rm -rf "$d"; done
EOF

cat >"$shims/systemd-nspawn" <<'EOF'
#!/bin/bash
# mkosi shim: bootctl in the image sees the ESP as a bind mount of a plain
# directory, not vfat; let it through.
for a in "$@"; do
    case $a in
        --directory=*|-D) exec /usr/bin/systemd-nspawn --setenv=SYSTEMD_RELAX_ESP_CHECKS=1 "$@" ;;
    esac
done
exec /usr/bin/systemd-nspawn "$@"
EOF
chmod 0755 "$shims"/*

# ---------------------------------------------------------------------------
# 3. The mkosi project: mkosi.default + a post-install script.
proj="$work/project"
mkdir -p "$proj"
cat >"$proj/mkosi.default" <<EOF
[Distribution]
Distribution=debian
Release=bookworm
Mirror=$mirror

[Output]
Format=gpt_ext4
Bootable=yes
BootProtocols=uefi
WithUnifiedKernelImages=yes
KernelCommandLine=!* console=ttyS0,115200 selinux=0 audit=0
Hostname=mkosi-device
Output=$work/out/image.raw

[Content]
Packages=linux-image-amd64,systemd,systemd-sysv,systemd-boot,dracut,udev,dbus,docker.io,containerd,runc,iptables,apparmor,ca-certificates,kmod,procps,e2fsprogs
ExtraTrees=$etc,$work/docker-store.tar
PostInstallationScript=$proj/mkosi.postinst
Password=root

[Partitions]
RootSize=2G
ESPSize=256M

[Host]
ExtraSearchPaths=$shims
EOF

cat >"$proj/mkosi.postinst" <<'EOF'
#!/bin/sh
# Enable the engine and the stack's units (the fixture enables the same).
set -e
systemctl enable containerd.service docker.service
# An offline device: docker.service is ordered after network-online.target,
# and systemd-networkd-wait-online (enabled by mkosi) would hold it back
# for its 2-minute timeout on every boot.
systemctl mask systemd-networkd-wait-online.service
for u in /etc/systemd/system/container-*.service; do
    systemctl enable "$(basename "$u")"
done
EOF
chmod 0755 "$proj/mkosi.postinst"

mkdir -p "$work/out"
log "building with mkosi $ver (mirror $mirror); this takes several minutes"
start=$(date +%s)
if ! (cd "$proj" && mkosi --force --workspace-dir "$work" --nspawn-keep-unit build); then
    die "mkosi build failed (see its output above)"
fi
[ -s "$work/out/image.raw" ] || die "mkosi finished but wrote no $work/out/image.raw"
mv -f "$work/out/image.raw" "$out"
chmod 0644 "$out"
log "wrote $out in $(( $(date +%s) - start ))s ($(du -h --apparent-size "$out" | cut -f1) apparent, $(du -h "$out" | cut -f1) on disk)"
