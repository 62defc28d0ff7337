#!/bin/sh
# Make (once) the Debian 12 amd64 root with systemd that tests/packaging/test_deb.py boots to install the package in.
#
#   tests/packaging/systemd-root.sh ROOT     (make test runs it; the tests use it through an overlay,
#                                              so the root itself never changes once made)
set -eu
ROOT=${1:?usage: tests/packaging/systemd-root.sh ROOT}
die() { echo "systemd-root: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap)"
[ -e "$ROOT/.etun-root" ] && exit 0
command -v debootstrap >/dev/null || die "debootstrap missing (make deps installs it)"
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
[ -e "$ROOT/.etun-root" ] && exit 0
# A half-made root never had anything mounted in it (debootstrap unmounts what it mounted).
grep -q " $ROOT.new/" /proc/mounts && die "something is mounted under $ROOT.new; unmount it first"
rm -rf --one-file-system "$ROOT.new"
started=$(date +%s)
echo "systemd-root: making a Debian 12 root with systemd in $ROOT (about a minute, once)"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$ROOT.new" \
    http://deb.debian.org/debian >"$ROOT.log" 2>&1 || die "debootstrap failed; see $ROOT.log"
echo "Debian 12 amd64 with systemd, for test_deb.py, made $(date -u +%FT%TZ)" >"$ROOT.new/.etun-root"
mv "$ROOT.new" "$ROOT"
echo "systemd-root: made in $(( $(date +%s) - started )) s"
