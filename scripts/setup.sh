#!/usr/bin/env bash
# Installs everything airboot needs on a Debian bookworm machine and builds
# it. Idempotent: a second run only checks. Needs root (apt, and later the
# fixture builds), re-runs itself with sudo when available.
#
#   scripts/setup.sh                # packages, Rust targets, vhost-device-vsock, the guest probe
#   scripts/setup.sh --release      # also the release build of airboot
#   scripts/setup.sh --skip-helper  # all but vhost-device-vsock (scripts/test.sh
#                                   # builds it beside the fixtures) ...
#   scripts/setup.sh --helper-only  # ... with this
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
    echo "setup.sh: run as root (apt-get, mmdebstrap and a private dockerd need it)" >&2
    exit 2
fi

step() { printf '\n== %s\n' "$*"; }
mode=${1:-}
case "$mode" in
    "" | --release | --skip-helper | --helper-only) ;;
    *) echo "setup.sh: unknown option $mode (--release, --skip-helper, --helper-only)" >&2; exit 2 ;;
esac

# vhost-device-vsock serves the guest's vsock device in user space when the
# host has no /dev/vhost-vsock (most CI machines). Cached outside the tree.
helper() {
    local cache vdv_version=0.3.0 vdv
    cache="${AIRBOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airboot}"
    vdv="$cache/tools/vhost-device-vsock-$vdv_version"
    if [ ! -x "$vdv/bin/vhost-device-vsock" ]; then
        step "installing vhost-device-vsock $vdv_version (cargo install, 2-4 min)"
        cargo install -q --locked vhost-device-vsock --version "$vdv_version" --root "$vdv"
    fi
}
if [ "$mode" = --helper-only ]; then
    helper
    exit 0
fi

packages=(
    qemu-system-x86 qemu-system-arm ovmf qemu-efi-aarch64   # VMs and firmware
    mmdebstrap debian-archive-keyring                       # fixture rootfs
    docker.io                                               # pre-seeding a fixture's /var/lib/docker
    podman crun netavark                                    # pre-seeding a Podman fixture's store (podman --root)
    e2fsprogs kmod dpkg fdisk mtools dosfstools             # disks, modules
    zstd xz-utils bzip2 gzip                                # compressed input images
    syslinux syslinux-common systemd-boot-efi binutils      # BIOS and UEFI+UKI test disks (scripts/make-device-image.sh)
    erofs-utils cpio                                        # a read-only-root test disk (same script)
    grub-pc-bin                                             # a BIOS+GRUB test disk (same script; no grub-pc: nothing is installed on the host)
    mkosi                                                   # a UEFI+UKI image as mkosi builds it (scripts/make-mkosi-image.sh)
    qemu-user-static binfmt-support arch-test               # foreign-arch rootfs
    chromium                                                # the HTML report's render test
    ca-certificates
)
missing=()
for p in "${packages[@]}" qemu-utils; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Never start the host's docker service: airboot runs its own private
    # dockerd only while pre-seeding a fixture.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
    # qemu-system-* may replace a newer qemu-utils from backports: install
    # the matching one afterwards.
    apt-get install -y -q --no-install-recommends qemu-utils
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

# arm64 fixtures are built on this host: their maintainer scripts run
# through qemu-user, which needs the binfmt_misc handlers registered.
if [ "$(uname -m)" != aarch64 ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        step "mounting binfmt_misc (for building arm64 fixtures)"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 || true
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo "setup.sh: warning: no qemu-aarch64 binfmt handler: arm64 fixtures cannot be built here" >&2
    fi
fi

step "Rust targets for the static guest probe"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

[ "$mode" = --skip-helper ] || helper

step "building the guest probe (static, both architectures)"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    cargo build -q --release --locked -p airboot-probe --target "$t"
done

if [ "$mode" = --release ]; then
    step "building airboot (release)"
    cargo build -q --release --locked -p airboot
fi
step "setup done"
