#!/bin/sh
# Installs what kfv needs to build, test and run its demo on Debian 12,
# and only what is missing. Run as root (CI does); as another user it
# prints the apt-get command to run instead.
set -eu

need_pkgs=""
want() { # want PACKAGE TEST...
	pkg=$1; shift
	if ! "$@" >/dev/null 2>&1; then
		need_pkgs="$need_pkgs $pkg"
	fi
}

want qemu-system-x86 command -v qemu-system-x86_64
want qemu-utils      command -v qemu-img
want libseccomp-dev  pkg-config --exists libseccomp
want pkg-config      command -v pkg-config
want gcc             command -v gcc
want make            command -v make
want busybox-static  test -x /bin/busybox
want cpio            command -v cpio
want socat           command -v socat
# The metrics test scrapes kfv's textfiles through a real node_exporter.
want prometheus-node-exporter test -x /usr/bin/prometheus-node-exporter
# tools/qemu10.sh checks QEMU 10.0's packages against the Debian archive key.
want debian-archive-keyring test -e /usr/share/keyrings/debian-archive-keyring.gpg

if [ -n "$need_pkgs" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "kfv: missing packages:$need_pkgs" >&2
		echo "kfv: install them with: sudo apt-get update && sudo apt-get install -y$need_pkgs" >&2
		exit 1
	fi
	echo "kfv: installing$need_pkgs"
	# A new machine's package lists may be stale or empty.
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need_pkgs
fi

GO=${GO:-go}
if ! command -v "$GO" >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		GO=/usr/local/go/bin/go
	else
		echo "kfv: no Go toolchain found (looked for 'go' in PATH and /usr/local/go/bin/go)" >&2
		exit 1
	fi
fi
"$GO" mod download

# The user QEMU runs as when kfv-run is root (tests and the demo run as
# root on CI).
"$(dirname "$0")/qemu-user.sh"

# QEMU 10.0 beside the system's 7.2, in .cache/qemu-10.0: make integration
# runs the suites on both. As another user than root, only a hint: the
# 10.0 pass then fails, saying what is missing.
if [ "$(id -u)" = 0 ]; then
	"$(dirname "$0")/qemu10.sh" >/dev/null
elif ! "$(dirname "$0")/qemu10.sh" >/dev/null 2>&1; then
	echo "kfv: QEMU 10.0 is not installed in .cache/qemu-10.0: run 'sudo tools/qemu10.sh'" >&2
fi
