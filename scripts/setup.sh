#!/usr/bin/env bash
# Installs what mvm needs on a Debian/Ubuntu host: QEMU, a guest kernel,
# busybox for the minimal image, e2fsprogs for ext4 images, and Go to build.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

arch=$(dpkg --print-architecture)
pkgs=(qemu-utils e2fsprogs busybox-static "linux-image-cloud-${arch}" faketime cpio mmdebstrap passt)
case "$arch" in
  amd64) pkgs+=(qemu-system-x86) ;;
  arm64) pkgs+=(qemu-system-arm) ;;
  *) echo "setup: unsupported architecture $arch" >&2; exit 1 ;;
esac

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

# Go builds mvmctl; the distro's golang-go is too old for go.mod, so use the
# toolchain on PATH or in /usr/local/go and say what to do when there is none.
need=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$(dirname "$0")/../go.mod")
GO=$(command -v go || echo /usr/local/go/bin/go)
if ! [ -x "$GO" ]; then
  echo "setup: Go $need or newer is needed to build mvm: install it from https://go.dev/dl into /usr/local/go" >&2
  exit 1
fi
have=$("$GO" env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  echo "setup: Go $have is older than the $need that go.mod needs: install a newer one from https://go.dev/dl" >&2
  exit 1
fi
echo "setup: Go $have"
