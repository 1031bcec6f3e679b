#!/usr/bin/env bash
# Installs what mvm needs on a Debian/Ubuntu host: QEMU, a guest kernel,
# busybox for the minimal image, e2fsprogs for ext4 images, and Go to build.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

arch=$(dpkg --print-architecture)
pkgs=(qemu-utils e2fsprogs busybox-static "linux-image-cloud-${arch}" faketime cpio mmdebstrap)
case "$arch" in
  amd64) pkgs+=(qemu-system-x86) ;;
  arm64) pkgs+=(qemu-system-arm) ;;
  *) echo "setup: unsupported architecture $arch" >&2; exit 1 ;;
esac
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || pkgs+=(golang-go)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: host ready ($(qemu-system-x86_64 --version 2>/dev/null | head -1 || true))"
