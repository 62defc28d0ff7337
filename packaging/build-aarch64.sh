#!/bin/sh
# Build dist/etun-aarch64 (and dist/etun-aarch64-dir) on an x86_64 host: `make binary` run inside a cached Debian 12 arm64 root, through qemu-user.
#
#   packaging/build-aarch64.sh ROOT           build, making or refreshing the root ROOT as needed
#   packaging/build-aarch64.sh ROOT --clean   remove ROOT safely (nothing mounted inside is followed)
#
# The root (debootstrap --foreign, then its second stage under qemu-aarch64-static) is made once and
# kept: its Debian packages, its .venv and pip's wheel cache make the next build a few minutes. Its
# packages are upgraded when they were last checked more than a week ago, so libcrypto fixes arrive.
# Inside, the build is the x86_64 recipe itself (`make binary`: the same pins, packaging/etun.spec,
# staticx, packaging/build_info.py), which also records the ARMv8 code paths of the bundled libcrypto.
set -eu

ROOT=${1:?usage: packaging/build-aarch64.sh ROOT [--clean]}
REPO=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=http://deb.debian.org/debian
# What `make binary` needs in the root; musl-tools builds staticx's bootloader (no aarch64 wheel on PyPI).
ROOT_PKGS="python3.11 python3.11-venv python3.11-dev gcc make libssl-dev pkg-config patchelf binutils musl-tools ca-certificates ccache"
UPGRADE_DAYS=7

die() { echo "build-aarch64: $*" >&2; exit 1; }
say() { echo "build-aarch64: $*"; }

mounts_under() { awk -v r="$1/" 'index($2 "/", r) == 1 { print $2 }' /proc/mounts | sort -r; }

unmount_all() {
    for m in $(mounts_under "$1"); do umount -l "$m" || die "cannot unmount $m"; done
    [ -z "$(mounts_under "$1")" ] || die "still mounted under $1: $(mounts_under "$1" | tr '\n' ' ')"
}

# rm -rf of a root with /dev bound inside would empty the host's /dev: unmount first, always.
remove_root() {
    [ -e "$1" ] || return 0
    unmount_all "$1"
    rm -rf --one-file-system "$1"
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
begun=$(date +%s)
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9 || die "cannot lock $ROOT.lock"

if [ "${2:-}" = "--clean" ]; then
    remove_root "$ROOT"; remove_root "$ROOT.new"
    say "removed $ROOT"
    exit 0
fi

# -- qemu-user through binfmt_misc: the kernel hands aarch64 ELF files to qemu-aarch64-static --------
for tool in debootstrap qemu-aarch64-static update-binfmts rsync; do
    command -v "$tool" >/dev/null || die "$tool missing (make deps installs debootstrap, qemu-user-static, binfmt-support, rsync)"
done
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 2>/dev/null \
    || die "cannot register qemu-aarch64 with binfmt_misc (update-binfmts --enable qemu-aarch64)"
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
# F: the kernel opens the interpreter once, so aarch64 programs run inside roots that hold no qemu.
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "qemu-aarch64 is registered without the F flag; run: update-binfmts --disable qemu-aarch64 && update-binfmts --enable qemu-aarch64"

# -- the root: made once, kept; a half-made one is never used ----------------------------------------
if [ ! -e "$ROOT/.etun-root" ]; then
    started=$(date +%s)
    remove_root "$ROOT"; remove_root "$ROOT.new"
    say "making a Debian 12 arm64 root in $ROOT (a few minutes, once)"
    debootstrap --foreign --arch=arm64 --variant=minbase bookworm "$ROOT.new" "$MIRROR" >"$ROOT.log" 2>&1 \
        || die "debootstrap (first stage) failed; see $ROOT.log"
    chroot "$ROOT.new" /debootstrap/debootstrap --second-stage >>"$ROOT.log" 2>&1 \
        || { unmount_all "$ROOT.new"; die "debootstrap (second stage, under qemu) failed; see $ROOT.log"; }
    unmount_all "$ROOT.new"
    cat >"$ROOT.new/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    echo "Debian 12 arm64, debootstrap --variant=minbase, made $(date -u +%FT%TZ)" >"$ROOT.new/.etun-root"
    mv "$ROOT.new" "$ROOT"
    say "root made in $(( $(date +%s) - started )) s"
fi

cleanup() { unmount_all "$ROOT"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# pip inside trusts what the host trusts (a host behind a TLS-inspecting proxy has its CA in there).
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/host-ca-bundle.crt"

in_root() {
    # /usr/lib/ccache first: an unchanged _fast.c compiles from the cache instead of minutes under qemu.
    chroot "$ROOT" env -i PATH=/usr/lib/ccache:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/host-ca-bundle.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        ${SOURCE_DATE_EPOCH:+SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH} "$@"
}

stamp="$ROOT/.etun-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "$ROOT_PKGS" ] || [ -n "$(find "$stamp" -mtime +$UPGRADE_DAYS)" ]; then
    started=$(date +%s)
    say "installing and upgrading the root's packages: $ROOT_PKGS"
    in_root sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $ROOT_PKGS && apt-get upgrade -y -qq" \
        >>"$ROOT.log" 2>&1 || die "apt-get in the root failed; see $ROOT.log"
    in_root apt-get clean
    echo "$ROOT_PKGS" >"$stamp"
    say "packages ready in $(( $(date +%s) - started )) s"
fi

# -- the build: this tree's files (as git would see them) in /src, then `make binary` -----------------
# Ignored files in /src (.venv, build/, dist/, the generated _fast.c) survive, so the virtualenv and
# pip's cache are reused. Cython regenerates _fast.c by file times, which another clone's older files
# would fool: the C is kept only while the datapath's sources are the same bytes as when it was made.
rsync -a --delete --filter=':- .gitignore' --exclude=.git "$REPO/" "$ROOT/src/"
sources=$(cd "$ROOT/src" && cat etun/*.pyx etun/*.pxd etun/*.pxi etun/*.h pyproject.toml 2>/dev/null | sha256sum)
if [ "$(cat "$ROOT/.etun-fast-sources" 2>/dev/null)" = "$sources" ] && [ -e "$ROOT/src/etun/_fast.c" ]; then
    touch "$ROOT/src/etun/_fast.c"      # the same sources: newer than the fresh checkout's files, so kept
else
    rm -f "$ROOT/src/etun/_fast.c" "$ROOT/src/etun/"*.so
fi
started=$(date +%s)
in_root sh -c "cd /src && make binary APT_PKGS='$ROOT_PKGS'" || die "make binary failed inside $ROOT"
echo "$sources" >"$ROOT/.etun-fast-sources"
say "make binary under qemu-user took $(( $(date +%s) - started )) s"

mkdir -p "$REPO/dist"
cp "$ROOT/src/dist/etun" "$REPO/dist/etun-aarch64.tmp"
mv "$REPO/dist/etun-aarch64.tmp" "$REPO/dist/etun-aarch64"
rm -rf "$REPO/dist/etun-aarch64-dir.tmp"
cp -a "$ROOT/src/dist/etun-dir" "$REPO/dist/etun-aarch64-dir.tmp"     # what the arm64 .deb installs
rm -rf "$REPO/dist/etun-aarch64-dir"
mv "$REPO/dist/etun-aarch64-dir.tmp" "$REPO/dist/etun-aarch64-dir"
sed -e 's|^dist/etun:|dist/etun-aarch64:|' -e 's|^dist/etun-dir:|dist/etun-aarch64-dir:|' "$ROOT/src/dist/etun.build-info" \
    >"$REPO/dist/etun-aarch64.build-info"
cat "$REPO/dist/etun-aarch64.build-info"
say "dist/etun-aarch64 ready in $(( $(date +%s) - begun )) s in all"
