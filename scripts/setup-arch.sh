#!/usr/bin/env bash
# Fetches what mvm needs to build and boot guests of a foreign architecture
# (today: arm64 on an amd64 host, or amd64 on arm64): QEMU for that arch
# from the host's packages, and the guest's Debian cloud kernel (+ modules)
# and static busybox, unpacked with dpkg-deb -x into
# ${MVM_ARCH_DIR:-/var/cache/mvm/arch}/<arch>/ — never into the host's /boot
# or /lib/modules. The image builder looks there (internal/image/archroot.go).
# Idempotent: a tree already unpacked from the candidate versions is kept.
# Usage: scripts/setup-arch.sh arm64 [amd64 ...]
set -euo pipefail

root=${MVM_ARCH_DIR:-/var/cache/mvm/arch}
host=$(dpkg --print-architecture)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_get() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 "$@"; }

for arch in "$@"; do
  [ "$arch" = "$host" ] && continue
  case "$arch" in
    arm64) qemu_pkg=qemu-system-arm ;;
    amd64) qemu_pkg=qemu-system-x86 ;;
    *) echo "setup-arch: unsupported guest architecture $arch (supported: amd64, arm64)" >&2; exit 1 ;;
  esac
  start=$(date +%s)
  updated=""
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    echo "setup-arch: dpkg --add-architecture $arch"
    $SUDO dpkg --add-architecture "$arch"
    apt_get update -qq
    updated=1
  fi
  if ! dpkg-query -W -f='${Status}' "$qemu_pkg" 2>/dev/null | grep -q "install ok installed"; then
    [ -n "$updated" ] || { apt_get update -qq; updated=1; }
    echo "setup-arch: installing $qemu_pkg"
    apt_get install -y -qq --no-install-recommends "$qemu_pkg" >/dev/null
  fi

  # The metapackage names the versioned kernel; apt-cache depends follows it.
  meta="linux-image-cloud-$arch"
  kpkg=$(apt-cache depends "$meta:$arch" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -1)
  if [ -z "$kpkg" ] && [ -z "$updated" ]; then
    apt_get update -qq; updated=1
    kpkg=$(apt-cache depends "$meta:$arch" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -1)
  fi
  if [ -z "$kpkg" ]; then
    echo "setup-arch: apt knows no $meta for $arch (is the Debian mirror reachable?)" >&2
    exit 1
  fi
  kver=$(apt-cache show --no-all-versions "$kpkg:$arch" | sed -n 's/^Version: //p' | head -1)
  bver=$(apt-cache show --no-all-versions "busybox-static:$arch" | sed -n 's/^Version: //p' | head -1)
  stamp="layout=1 $kpkg=$kver busybox-static=$bver"
  dest="$root/$arch"
  if [ -f "$dest/.mvm-versions" ] && [ "$(cat "$dest/.mvm-versions")" = "$stamp" ]; then
    echo "setup-arch: $arch guest inputs ready in $dest ($stamp)"
    continue
  fi

  echo "setup-arch: fetching $kpkg $kver and busybox-static $bver for $arch"
  $SUDO mkdir -p "$root"
  tmp=$($SUDO mktemp -d "$root/.$arch.XXXXXX")
  # apt-get download drops to the _apt user; let it write here.
  $SUDO chmod 0777 "$tmp"
  (cd "$tmp" && apt_get download -q "$kpkg:$arch=$kver" "busybox-static:$arch=$bver" >/dev/null)
  $SUDO mkdir "$tmp/tree"
  for deb in "$tmp"/*.deb; do
    $SUDO dpkg-deb -x "$deb" "$tmp/tree"
  done
  # Only what a build reads: the kernel, its modules (depmod output
  # included) and busybox. Docs and firmware stay out.
  $SUDO rm -rf "$tmp/tree/usr/share"
  # Packages carry no modules.dep (their postinst runs depmod); make it
  # here. depmod reads foreign-arch modules fine.
  for md in "$tmp"/tree/lib/modules/*/; do
    $SUDO depmod -b "$tmp/tree" "$(basename "$md")"
  done
  echo "$stamp" | $SUDO tee "$tmp/tree/.mvm-versions" >/dev/null
  $SUDO chmod -R a+rX "$tmp/tree"
  $SUDO rm -rf "$dest.old"
  [ -e "$dest" ] && $SUDO mv "$dest" "$dest.old"
  $SUDO mv "$tmp/tree" "$dest"
  $SUDO rm -rf "$tmp" "$dest.old"
  echo "setup-arch: $arch guest inputs in $dest ($(du -sh "$dest" | cut -f1), $(( $(date +%s) - start ))s)"
done
