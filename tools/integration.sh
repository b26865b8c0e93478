#!/bin/sh
# Runs the integration suites (./integration/... and guest/'s boot tests)
# once per QEMU: the system's (qemu-system-x86_64 in PATH, Debian 12's
# 7.2) and QEMU 10.0 from .cache/qemu-10.0 (tools/qemu10.sh), selected
# with KFV_QEMU. Both passes run side by side by default (the suites wait
# on guests more than they compute; libvirt's tests take turns, see
# integration/libvirt_test.go); KFV_PASSES=sequential runs one after the
# other. Each pass's output is kept in its own log and printed whole, under
# a header that names its QEMU, when both are done. Exit status: 0 when
# every pass passed.
#
# Needs KFV_RUN and KFV_GUESTS (make integration sets them); GO, TEST_TIMEOUT.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
TEST_TIMEOUT=${TEST_TIMEOUT:-40m}
: "${KFV_RUN:?set KFV_RUN to the kfv-run binary under test}" "${KFV_GUESTS:?set KFV_GUESTS to the guest cache}"
export KFV_RUN KFV_GUESTS

sys=$(command -v qemu-system-x86_64) || { echo "kfv: qemu-system-x86_64 not in PATH: run make deps" >&2; exit 1; }
q10=$top/.cache/qemu-10.0/usr/bin/qemu-system-x86_64
[ -x "$q10" ] || { echo "kfv: $q10 missing: run tools/qemu10.sh as root (make deps does)" >&2; exit 1; }

logs=$top/.cache/integration
mkdir -p "$logs"

# pass NAME QEMU ENV: one pass; ENV is KFV_QEMU's value ("" for the one in PATH).
pass() {
	name=$1 qemu=$2 sel=$3
	log=$logs/$name.log
	{
		echo "== integration pass $name: $qemu: $("$qemu" -version | head -n 1)"
		start=$(date +%s)
		cd "$top" && KFV_QEMU=$sel "$GO" test -count=1 -timeout "$TEST_TIMEOUT" -v ./integration/... ./guest/...
		rc=$?
		echo "== integration pass $name: exit $rc after $(($(date +%s) - start)) s"
		echo "$rc" >"$log.rc"
	} >"$log" 2>&1
}

rm -f "$logs"/*.rc
case ${KFV_PASSES:-parallel} in
parallel)
	pass qemu-system "$sys" "" &
	p1=$!
	pass qemu-10.0 "$q10" "$q10" &
	p2=$!
	echo "kfv: integration on $sys and $q10, side by side (logs in $logs)"
	wait $p1 $p2
	;;
sequential)
	pass qemu-system "$sys" ""
	pass qemu-10.0 "$q10" "$q10"
	;;
*)
	echo "kfv: KFV_PASSES=$KFV_PASSES: want parallel or sequential" >&2
	exit 2
	;;
esac

status=0
for name in qemu-system qemu-10.0; do
	cat "$logs/$name.log"
	rc=$(cat "$logs/$name.log.rc" 2>/dev/null || echo 1)
	[ "$rc" = 0 ] || status=1
done
for name in qemu-system qemu-10.0; do
	grep -h '^== integration pass' "$logs/$name.log" | tail -n 1
done
exit $status
