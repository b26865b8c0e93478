#!/bin/sh
# make demo: a supervised demo VM. Boots the project's raw-code guest under
# kfv-run (KVM when /dev/kvm works, TCG otherwise), shows it running, then
# simulates a compromised QEMU asking to run a shell (QMP "migrate" to an
# exec: URI makes QEMU fork /bin/sh) and shows what kfv did about it.
set -eu
cd "$(dirname "$0")/.."

KFV=bin/kfv-run
GUESTS=${GUESTS:-.cache/guests}
work=$(mktemp -d "${TMPDIR:-/tmp}/kfv-demo.XXXXXX")
qemu_pid=""
cleanup() {
	[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

img=$(${GO:-go} run ./integration/guest/mkguests -out "$GUESTS" -raw | grep raw-loop)
accel=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; fi
cpu="max,-apic"
[ "$accel" = kvm ] && cpu="host,-arch-capabilities"

qmp() { # qmp JSON: send one command after the handshake, print the answer
	printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" |
		socat -t 2 - UNIX-CONNECT:"$work/qmp.sock" | grep -v '"QMP"' | sed -n 2p
}

echo "== kfv demo: booting the raw-code guest under kfv-run ($accel), built-in profile, enforce mode"
"$KFV" --events "$work/events.jsonl" --vm demo -- \
	qemu-system-x86_64 -name demo,debug-threads=on -accel "$accel" -machine q35 -cpu "$cpu" -m 16 \
	-nodefaults -no-user-config -display none -bios "$img" \
	-serial "file:$work/serial.log" -qmp "unix:$work/qmp.sock,server=on,wait=off" &
qemu_pid=$!

for _ in $(seq 100); do [ -S "$work/qmp.sock" ] && break; sleep 0.1; done
sleep 2
echo "-- guest console:"
sed 's/^/   | /' "$work/serial.log"
echo "-- QMP query-status: $(qmp '{"execute":"query-status"}')"

echo
echo "== SIMULATED COMPROMISE: QEMU is asked to run a shell command (touch $work/pwned)"
qmp "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:touch $work/pwned\"}}" >/dev/null || true
sleep 1
if [ -e "$work/pwned" ]; then
	echo "!! the shell ran: kfv did NOT stop it"
	status=1
else
	echo "-- the shell never ran: $work/pwned does not exist"
	status=0
fi
echo "-- QMP query-status after the attempt: $(qmp '{"execute":"query-status"}')"

qmp '{"execute":"quit"}' >/dev/null || true
wait "$qemu_pid" || true
qemu_pid=""

echo
echo "== what kfv saw and did (kfv-run events):"
"$KFV" events "$work/events.jsonl"
exit $status
