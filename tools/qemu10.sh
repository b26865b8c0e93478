#!/bin/sh
# Installs QEMU 10.0 (Debian 13's, from bookworm-backports) into
# .cache/qemu-10.0 beside the system's QEMU 7.2, so that the tests run on
# both (make integration; KFV_QEMU selects the QEMU a test run uses).
#
# No package is installed and the machine's apt configuration is not
# changed: the packages are fetched with apt-get download through a
# private apt configuration (.cache/apt-backports, whose only source is
# bookworm-backports, signed by the Debian archive key) and unpacked with
# dpkg-deb -x. apt checks every .deb against the signed index as it
# downloads it.
#
# Idempotent: when the wanted version is already there and runs, it does
# nothing. Prints the path of qemu-system-x86_64 on stdout, last line.
# Needs root (apt-get), qemu-system-x86 7.2 (whose shared libraries and
# ipxe-qemu ROMs 10.0 uses) and debian-archive-keyring: tools/deps.sh
# installs both.
set -eu

QEMU_VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
# qemu-system-x86 10.0 depends on seabios >> 1.16.3-1~; bookworm has 1.16.2.
SEABIOS_VERSION='1.16.3-2~bpo12+1'
PKGS="qemu-system-x86=$QEMU_VERSION qemu-system-common=$QEMU_VERSION qemu-system-data=$QEMU_VERSION qemu-utils=$QEMU_VERSION seabios=$SEABIOS_VERSION"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

top=$(cd "$(dirname "$0")/.." && pwd)
dest=$top/.cache/qemu-10.0
aptdir=$top/.cache/apt-backports
bin=$dest/usr/bin/qemu-system-x86_64
stamp=$dest/.kfv-installed

fail() {
	echo "kfv: tools/qemu10.sh: $*" >&2
	exit 1
}

# Already there: the stamp names the same packages, the bundle link is
# in place, and the binary runs and reports the same Debian version.
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PKGS" ] && [ -L "$dest/usr/bin/qemu-bundle" ] &&
	"$bin" -version 2>/dev/null | grep -qF "(Debian $QEMU_VERSION)"; then
	echo "$bin"
	exit 0
fi

[ "$(id -u)" = 0 ] || fail "QEMU $QEMU_VERSION is not in $dest; run this script as root (it uses apt-get download)"
for f in /usr/lib/ipxe/qemu/efi-virtio.rom "$KEYRING"; do
	[ -e "$f" ] || fail "$f missing: run tools/deps.sh first (installs qemu-system-x86 and debian-archive-keyring)"
done
for c in apt-get dpkg-deb; do
	command -v "$c" >/dev/null 2>&1 || fail "$c not found: this script needs Debian's apt"
done

# The private apt: its own sources (bookworm-backports only), lists and
# caches; the system's /etc/apt and /var/lib/apt are only read.
mkdir -p "$aptdir/etc/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/debs"
cat >"$aptdir/etc/sources.list.d/backports.sources" <<EOS
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Architectures: amd64
Signed-By: $KEYRING
EOS
cat >"$aptdir/apt.conf" <<EOS
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$aptdir/etc/sources.list.d";
Dir::State::Lists "$aptdir/lists";
Dir::Cache "$aptdir/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
EOS
export APT_CONFIG="$aptdir/apt.conf"
log=$aptdir/apt.log
apt-get update -q >"$log" 2>&1 || fail "apt-get update of bookworm-backports failed (output in $log)"
(cd "$aptdir/debs" && rm -f ./*.deb && apt-get download -q $PKGS) >>"$log" 2>&1 ||
	fail "apt-get download $PKGS failed (output in $log)"

tmp=$dest.tmp.$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
for d in "$aptdir"/debs/*.deb; do
	dpkg-deb -x "$d" "$tmp" || fail "dpkg-deb -x $d failed"
done
# Debian builds QEMU with --disable-relocatable: it looks for its data
# (/usr/share/qemu, /usr/share/seabios, /usr/lib/ipxe/qemu) and modules
# (/usr/lib/x86_64-linux-gnu/qemu) at their absolute paths, the system
# QEMU's, unless DIR/qemu-bundle exists beside the binary (DIR found from
# /proc/self/exe): then each is looked up as DIR/qemu-bundle/PATH first.
ln -sfn ../.. "$tmp/usr/bin/qemu-bundle"
# Option ROMs: the system's ipxe-qemu (the one QEMU 10.0 gets on Debian 12,
# where backports has no newer ipxe-qemu).
mkdir -p "$tmp/usr/lib"
ln -sfn /usr/lib/ipxe "$tmp/usr/lib/ipxe"
# Not needed to run QEMU.
rm -rf "$tmp/usr/share/doc" "$tmp/usr/share/man" "$tmp/usr/lib/systemd"

"$tmp/usr/bin/qemu-system-x86_64" -version | grep -qF "(Debian $QEMU_VERSION)" ||
	fail "the unpacked $tmp/usr/bin/qemu-system-x86_64 does not run or is not $QEMU_VERSION"
printf '%s\n' "$PKGS" >"$tmp/.kfv-installed"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "kfv: QEMU $QEMU_VERSION in $dest" >&2
echo "$bin"
