#!/bin/sh
# Creates kfv-qemu, the user QEMU runs as when kfv-run is root (kfv-run
# --run-as; README.md): a system user with no home and no login shell.
# Does nothing when it exists; as another user than root, says how.
set -eu
user=kfv-qemu
if id -u "$user" >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "kfv: no user $user (QEMU's user when kfv-run runs as root): create it with: sudo $0" >&2
	exit 0
fi
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
	--comment "QEMU under kfv-run" "$user"
echo "kfv: created the system user $user, which QEMU runs as under a root kfv-run"
