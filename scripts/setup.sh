#!/usr/bin/env bash
# Installs what mvm needs on a Debian/Ubuntu host: QEMU, a guest kernel,
# busybox for the minimal image, e2fsprogs for ext4 images, and Go to build;
# and for the registry tests a docker-registry, an S3 gateway (versitygw)
# and the standard OCI clients (crane, oras); containerd and ctr for the
# containerd shim's tests (TestShim starts a containerd of its own).
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

arch=$(dpkg --print-architecture)
pkgs=(qemu-utils e2fsprogs busybox-static "linux-image-cloud-${arch}" faketime cpio mmdebstrap passt docker-registry)
case "$arch" in
  amd64) pkgs+=(qemu-system-x86) ;;
  arm64) pkgs+=(qemu-system-arm) ;;
  *) echo "setup: unsupported architecture $arch" >&2; exit 1 ;;
esac
# Debian's containerd, unless one is installed already (Docker's
# containerd.io package provides the same binaries and conflicts with it).
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
  pkgs+=(containerd)
fi

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
  # The package starts a registry on :5000; the tests run their own on
  # free loopback ports, so a fresh install's service is only in the way.
  if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
    $SUDO systemctl disable --now docker-registry 2>/dev/null || true
  fi
fi
# Guest inputs of the other architecture (docs/foreign-arch.md): about
# 40 s and 110 MB on a fresh host. MVM_FOREIGN_ARCHES="" skips it.
case "$arch" in amd64) other=arm64 ;; arm64) other=amd64 ;; esac
"$(dirname "$0")/setup-arch.sh" ${MVM_FOREIGN_ARCHES-$other}
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

# Test servers and clients (pinned, installed only when missing): the
# registry tests look for them on PATH and in GOPATH/bin.
gobin="$("$GO" env GOPATH | cut -d: -f1)/bin"
go_tool() { # name module@version
  if command -v "$1" >/dev/null 2>&1 || [ -x "$gobin/$1" ]; then return 0; fi
  echo "setup: installing $1 ($2)"
  "$GO" install "$2"
}
go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0
go_tool crane github.com/google/go-containerregistry/cmd/crane@v0.22.1
go_tool oras oras.land/oras/cmd/oras@v1.3.6
