#!/bin/busybox sh
# /init of the kfv Linux test guest (busybox sh, PID 1).
#
# Reads its workload from the kernel command line:
#   kfv.workload=boot|disk|net|idle|reboot|counter|hotplug|cdrom|react|share|topology|rng
#                     what to run (default boot)
#   kfv.size=N        disk, net, share: MiB to write or send (default 64, net 16)
#   kfv.dev=NAME      disk: the block device under /dev (default vda)
#   kfv.port=N        net: TCP port on the host (default 5555)
#   kfv.host=A.B.C.D  net: host address (default 10.0.2.2, QEMU user net)
#   kfv.ip=A.B.C.D    net: the guest's address on eth0, /24 (default 10.0.2.15)
#   kfv.seconds=N     idle: seconds to sleep (default 10); counter,
#                     hotplug, cdrom: how long to wait (default 60)
#   kfv.count=N       counter: how many ticks to print (default 600)
#   kfv.payload=NAME kfv.arg=TEXT kfv.sector=N  trigger: see workload_trigger
# Workloads driven from the host (reboot, counter, hotplug, cdrom) are
# described above their functions.
# and prints machine-readable markers on the console, one per line:
#   KFV-BOOTED ms=N                     kernel uptime when /init started
#   KFV-RESULT workload=W status=ok|fail key=value...
#   KFV-DONE
# then powers off. Any change here changes the guest cache key.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp

# uptime_ms prints the kernel's uptime in milliseconds (10 ms resolution).
uptime_ms() {
	read -r up _ </proc/uptime
	echo $((${up%.*} * 1000 + 1${up#*.} * 10 - 1000))
}

echo "KFV-BOOTED ms=$(uptime_ms)"

kfv_workload=boot
for w in $(cat /proc/cmdline); do
	case "$w" in
	kfv.*=*)
		k=${w%%=*}
		k=${k#kfv.}
		v=${w#*=}
		case "$k" in
		*[!a-z0-9_]* | "") continue ;;
		esac
		eval "kfv_$k=\$v"
		;;
	esac
done

# Modules, in dependency order (written by the builder). The floppy
# driver only for a floppy disk workload: on a machine without a floppy
# controller (q35) its probe fails after seconds.
while read -r m; do
	[ -n "$m" ] || continue
	case "$m" in
	*/floppy.ko) [ "${kfv_dev:-}" = fd0 ] || continue ;;
	esac
	insmod "/lib/modules/$m" || echo "KFV-WARN insmod $m failed"
done </etc/kfv-modules

result() {
	echo "KFV-RESULT workload=$kfv_workload $*"
}

# is_uint VALUE: VALUE is a non-negative decimal integer.
is_uint() {
	case "$1" in
	"" | *[!0-9]*) return 1 ;;
	esac
	return 0
}

# pattern N: N MiB of deterministic data; each MiB starts with its index
# so that misplaced blocks change the checksum.
pattern() {
	yes kfv-pattern-0123456789abcdef | head -c 1048560 >/tmp/block
	i=0
	while [ "$i" -lt "$1" ]; do
		printf '%016d' "$i"
		cat /tmp/block
		i=$((i + 1))
	done
}

# wait_dev PATH: waits up to 20 s for a device node (SCSI, USB and NVMe
# disks appear after the driver's asynchronous scan).
wait_dev() {
	t=0
	until [ -e "$1" ]; do
		[ "$t" -lt 100 ] || return 1
		t=$((t + 1))
		sleep 0.2
	done
}

workload_disk() {
	size=${kfv_size:-64}
	dev=${kfv_dev:-vda}
	is_uint "$size" || { result status=fail reason=bad-size; return; }
	case "$dev" in
	"" | *[!a-z0-9]*) result status=fail reason=bad-dev; return ;;
	esac
	dev=/dev/$dev
	wait_dev "$dev" && [ -b "$dev" ] || { result status=fail reason=no-${dev#/dev/}; return; }
	want=$(pattern "$size" | sha256sum)
	want=${want%% *}
	t0=$(uptime_ms)
	pattern "$size" | dd of="$dev" bs=1M iflag=fullblock oflag=direct conv=fsync status=none ||
		{ result status=fail reason=write; return; }
	t1=$(uptime_ms)
	got=$(dd if="$dev" bs=1M count="$size" iflag=direct status=none | sha256sum)
	got=${got%% *}
	t2=$(uptime_ms)
	st=ok
	[ "$got" = "$want" ] || st=fail
	result status=$st bytes=$((size * 1048576)) write_ms=$((t1 - t0)) read_ms=$((t2 - t1)) sha256=$got
}

workload_net() {
	size=${kfv_size:-16}
	port=${kfv_port:-5555}
	host=${kfv_host:-10.0.2.2}
	is_uint "$size" || { result status=fail reason=bad-size; return; }
	is_uint "$port" || { result status=fail reason=bad-port; return; }
	[ -e /sys/class/net/eth0 ] || { result status=fail reason=no-eth0; return; }
	ip=${kfv_ip:-10.0.2.15}
	case "$ip" in
	"" | *[!0-9.]*) result status=fail reason=bad-ip; return ;;
	esac
	ip link set lo up
	ip addr add "$ip/24" dev eth0 &&
		ip link set eth0 up &&
		ip route add default via "$host" ||
		{ result status=fail reason=ip-config; return; }
	sum=$(pattern "$size" | sha256sum)
	sum=${sum%% *}
	t0=$(uptime_ms)
	pattern "$size" | nc "$host" "$port" >/dev/null ||
		{ result status=fail reason=nc; return; }
	t1=$(uptime_ms)
	result status=ok bytes=$((size * 1048576)) ms=$((t1 - t0)) sha256=$sum
}

# share_tree DIR: the file work of a writable share, which the host
# checks after the VM exits: a directory made and renamed, a file
# written, renamed, hard- and soft-linked, its owner, mode and times
# changed, a hard link, a directory and a file removed.
share_tree() {
	t=$1/kfvdir
	mkdir "$t" &&
		echo "kfv 9p tree" >"$t/a" &&
		mv "$t/a" "$t/b" &&
		ln "$t/b" "$t/hard" &&
		ln -s b "$t/soft" &&
		chown 1234:1234 "$t/b" &&
		chmod 0640 "$t/b" &&
		touch -d "2001-02-03 04:05:06" "$t/b" &&
		rm "$t/hard" &&
		mkdir "$t/empty" && rmdir "$t/empty" &&
		echo gone >"$t/gone" && rm "$t/gone" &&
		mv "$t" "$1/tree" &&
		[ "$(cat "$1/tree/soft")" = "kfv 9p tree" ]
}

# share: mounts the 9p share tagged kfvshare, reports the sha256 of the
# host's file "in" there, and writes kfv.size MiB of the pattern to "out"
# and does share_tree's file work (nothing with kfv.size=0).
workload_share() {
	size=${kfv_size:-4}
	is_uint "$size" || { result status=fail reason=bad-size; return; }
	mkdir -p /mnt/share
	mount -t 9p -o trans=virtio,version=9p2000.L kfvshare /mnt/share ||
		{ result status=fail reason=mount; return; }
	in=$(sha256sum </mnt/share/in) || { result status=fail reason=read; return; }
	# kfv.size=0: a read-only share, nothing written.
	[ "$size" = 0 ] || { pattern "$size" >/mnt/share/out && sync; } ||
		{ result status=fail reason=write; return; }
	[ "$size" = 0 ] || { share_tree /mnt/share && sync; } ||
		{ result status=fail reason=tree; return; }
	umount /mnt/share
	result status=ok in=${in%% *} bytes=$((size * 1048576))
}

# topology: reports the CPUs and NUMA nodes the guest sees.
workload_topology() {
	cpus=$(grep -c '^processor' /proc/cpuinfo)
	nodes=0
	for n in /sys/devices/system/node/node[0-9]*; do
		[ -e "$n" ] && nodes=$((nodes + 1))
	done
	read -r _ kb _ </proc/meminfo
	result status=ok cpus=$cpus nodes=$nodes mem_kb=$kb
}

# rng: reads 4 KiB from the hardware RNG (virtio-rng) and reports which
# one it was and how many distinct bytes came out.
workload_rng() {
	cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
	case "$cur" in
	virtio_rng*) ;;
	*) result status=fail reason=no-virtio-rng current=${cur:-none}; return ;;
	esac
	n=$(dd if=/dev/hwrng bs=4096 count=1 iflag=fullblock status=none | od -An -v -tu1 | tr -s ' ' '\n' | sort -u | grep -c .)
	[ "$n" -gt 128 ] || { result status=fail reason=few-values distinct=$n; return; }
	result status=ok rng=$cur distinct=$n
}

workload_idle() {
	secs=${kfv_seconds:-10}
	is_uint "$secs" || { result status=fail reason=bad-seconds; return; }
	sleep "$secs"
	result status=ok seconds=$secs
}

# reboot: the guest reboots once. The first boot finds no marker in the
# first sector of /dev/vda, writes it, prints KFV-REBOOTING and reboots;
# the second boot finds the marker and finishes. Needs a disk and QEMU
# without -no-reboot.
reboot_mark=KFV-REBOOT-MARK1
workload_reboot() {
	[ -b /dev/vda ] || { result status=fail reason=no-vda; return; }
	got=$(dd if=/dev/vda bs=16 count=1 status=none | tr -d '\000')
	if [ "$got" = "$reboot_mark" ]; then
		result status=ok boot=2
		return
	fi
	printf '%s' "$reboot_mark" | dd of=/dev/vda bs=16 count=1 conv=fsync status=none ||
		{ result status=fail reason=write-mark; return; }
	echo "KFV-REBOOTING boot=1"
	sync
	reboot -f
	result status=fail reason=reboot
}

# counter: prints "KFV-COUNT n=N" every 0.2 s, N from 0 to kfv.count-1.
# The count lives in guest memory only, so a snapshot restored with
# loadvm, or a migrated guest, shows where it went back or went on.
workload_counter() {
	count=${kfv_count:-600}
	is_uint "$count" || { result status=fail reason=bad-count; return; }
	i=0
	while [ "$i" -lt "$count" ]; do
		echo "KFV-COUNT n=$i"
		i=$((i + 1))
		sleep 0.2
	done
	result status=ok count=$count
}

# first_nic prints the name of the first ethN interface, if any.
first_nic() {
	for d in /sys/class/net/eth*; do
		[ -e "$d" ] && { echo "${d##*/}"; return 0; }
	done
	return 1
}

# hotplug: waits up to kfv.seconds for a NIC to appear (the host adds it
# with device_add), prints "KFV-HOTPLUG added=ethN mac=M", then waits for
# it to go (device_del) and prints "KFV-HOTPLUG removed=ethN".
workload_hotplug() {
	secs=${kfv_seconds:-60}
	is_uint "$secs" || { result status=fail reason=bad-seconds; return; }
	echo "KFV-HOTPLUG waiting"
	t=0
	until nic=$(first_nic); do
		[ "$t" -lt $((secs * 5)) ] || { result status=fail reason=no-nic; return; }
		t=$((t + 1))
		sleep 0.2
	done
	read -r mac <"/sys/class/net/$nic/address"
	echo "KFV-HOTPLUG added=$nic mac=$mac"
	t=0
	while [ -e "/sys/class/net/$nic" ]; do
		[ "$t" -lt $((secs * 5)) ] || { result status=fail reason=nic-stayed; return; }
		t=$((t + 1))
		sleep 0.2
	done
	echo "KFV-HOTPLUG removed=$nic"
	result status=ok nic=$nic mac=$mac
}

# medium_sum prints the sha256 of the first kfv.size MiB of /dev/sr0, or
# "none" when no medium can be read.
medium_sum() {
	s=$(dd if=/dev/sr0 bs=1M count="$size" status=none 2>/dev/null | sha256sum) ||
		{ echo none; return; }
	s=${s%% *}
	# sha256 of no bytes: the drive is empty or unreadable
	[ "$s" = e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ] && s=none
	echo "$s"
}

# cdrom: reads the medium in /dev/sr0 (none at first), prints
# "KFV-CDROM first=SUM", then polls for up to kfv.seconds until the
# medium changes (the host uses blockdev-change-medium) and reports the
# new medium's sha256 (of its first kfv.size MiB, default 1).
workload_cdrom() {
	size=${kfv_size:-1}
	secs=${kfv_seconds:-60}
	is_uint "$size" || { result status=fail reason=bad-size; return; }
	is_uint "$secs" || { result status=fail reason=bad-seconds; return; }
	[ -b /dev/sr0 ] || { result status=fail reason=no-sr0; return; }
	first=$(medium_sum)
	echo "KFV-CDROM first=$first"
	t=0
	while cur=$(medium_sum); [ "$cur" = "$first" ]; do
		[ "$t" -lt $((secs * 2)) ] || { result status=fail reason=no-change; return; }
		t=$((t + 1))
		sleep 0.5
	done
	result status=ok first=$first sha256=$cur
}

workload_trigger() {
	# Sends the test implant a command through the block backend: one
	# sector "KFV-IMPLANT" NUL payload NUL arg NUL, zero-padded, written
	# with O_DIRECT to /dev/vda at sector kfv.sector (default 8), so that
	# QEMU writes it at once from a worker thread. Then it idles
	# kfv.seconds (default 0) so the host can look at the VM.
	payload=${kfv_payload:-}
	arg=${kfv_arg:-}
	sector=${kfv_sector:-8}
	secs=${kfv_seconds:-0}
	case "$payload" in
	"" | *[!a-z0-9-]*) result status=fail reason=bad-payload; return ;;
	esac
	is_uint "$sector" || { result status=fail reason=bad-sector; return; }
	is_uint "$secs" || { result status=fail reason=bad-seconds; return; }
	[ -b /dev/vda ] || { result status=fail reason=no-vda; return; }
	{
		printf 'KFV-IMPLANT\000%s\000%s\000' "$payload" "$arg"
		head -c 512 /dev/zero
	} | head -c 512 >/tmp/trigger
	dd if=/tmp/trigger of=/dev/vda bs=512 seek="$sector" count=1 oflag=direct conv=fsync status=none ||
		{ result status=fail reason=write; return; }
	result status=ok payload=$payload sector=$sector
	sleep "$secs"
}

# react: the guest's side of the tests of kfv's reactions. It sends the
# test implant one command (kfv.payload, kfv.arg) through /dev/vda as the
# trigger workload does, at most once per disk: before the command it
# writes a 1 MiB pattern at 1 MiB and a mark in sector 0, and a boot that
# finds the mark (QEMU was relaunched) sends nothing and reports the
# pattern's sha256 instead. Disk reads use O_DIRECT: the page cache is
# guest memory, which a restored checkpoint brings back.
#   kfv.at=N       instead: count ("KFV-COUNT n=N" every 0.2 s, kfv.count
#                  ticks, default 600) and at tick N copy sector 16 to
#                  sector 8 in one write: the host stages the command in
#                  sector 16 and may erase it, so that a guest brought
#                  back to an earlier state sends nothing when it gets
#                  there again (with no window between a check and the
#                  send)
#   kfv.port=N     configure eth0 and send one line to kfv.host:N before
#                  the command ("before"), once the NIC changed
#                  ("after"), and after the second command ("again")
#   kfv.then=NAME  a second command (argument kfv.arg), sent once the
#                  NIC changed
#   kfv.seconds=N  how long to wait for the NIC to change (default 60)
#   kfv.linger=N   seconds to idle before the result (default 0), so that
#                  the host can look at the VM after the change
# Markers: "KFV-REACT mark=found sha256=S", "KFV-REACT pattern sha256=S",
# "KFV-REACT sent payload=P", "KFV-REACT skipped payload=P" (the disk is
# marked), "KFV-REACT send=TAG status=ok|fail",
# "KFV-REACT nic carrier=C present=P" on every change of eth0.
react_mark=KFV-REACT-MARK
react_nic() {
	if [ -e /sys/class/net/eth0 ]; then
		c=$(cat /sys/class/net/eth0/carrier 2>/dev/null) || c=none
		echo "carrier=${c:-none} present=1"
	else
		echo "carrier=none present=0"
	fi
}
react_send() {
	if echo "KFV-REACT send=$1" | timeout 10 nc -w 5 "$host" "$port" >/dev/null 2>&1; then
		echo "KFV-REACT send=$1 status=ok"
	else
		echo "KFV-REACT send=$1 status=fail"
	fi
}
react_marked() {
	m=$(dd if=/dev/vda bs=512 count=1 iflag=direct status=none | head -c ${#react_mark})
	[ "$m" = "$react_mark" ]
}
react_command() {
	{
		printf 'KFV-IMPLANT\000%s\000%s\000' "$1" "$arg"
		head -c 512 /dev/zero
	} | head -c 512 >/tmp/react-cmd
	dd if=/tmp/react-cmd of=/dev/vda bs=512 seek=8 count=1 oflag=direct conv=fsync status=none &&
		echo "KFV-REACT sent payload=$1"
}
react_fire() {
	if react_marked; then
		echo "KFV-REACT skipped payload=$payload"
		return 0
	fi
	sum=$(pattern 1 | sha256sum)
	pattern 1 | dd of=/dev/vda bs=1M seek=1 oflag=direct conv=fsync status=none || return 1
	echo "KFV-REACT pattern sha256=${sum%% *}"
	{
		printf '%s' "$react_mark"
		head -c 512 /dev/zero
	} | head -c 512 >/tmp/react-mark
	dd if=/tmp/react-mark of=/dev/vda bs=512 count=1 oflag=direct conv=fsync status=none || return 1
	react_command "$payload"
}
# react_watch waits up to kfv.seconds for eth0 to differ from $1 and
# prints its new state.
react_watch() {
	t=0
	while now=$(react_nic); [ "$now" = "$1" ]; do
		[ "$t" -lt $((secs * 5)) ] || return 1
		t=$((t + 1))
		sleep 0.2
	done
	echo "KFV-REACT nic $now"
}
workload_react() {
	payload=${kfv_payload:-}
	then=${kfv_then:-}
	arg=${kfv_arg:-}
	port=${kfv_port:-}
	host=${kfv_host:-10.0.2.2}
	secs=${kfv_seconds:-60}
	at=${kfv_at:-}
	count=${kfv_count:-600}
	linger=${kfv_linger:-0}
	case "$payload$then" in
	*[!a-z0-9-]*) result status=fail reason=bad-payload; return ;;
	esac
	[ -n "$payload" ] || [ -n "$at" ] || { result status=fail reason=no-payload; return; }
	is_uint "$secs" && is_uint "$count" && is_uint "$linger" || { result status=fail reason=bad-number; return; }
	[ -z "$at" ] || is_uint "$at" || { result status=fail reason=bad-at; return; }
	[ -z "$port" ] || is_uint "$port" || { result status=fail reason=bad-port; return; }
	[ -b /dev/vda ] || { result status=fail reason=no-vda; return; }
	if react_marked; then
		sum=$(dd if=/dev/vda bs=1M skip=1 count=1 iflag=direct status=none | sha256sum)
		echo "KFV-REACT mark=found sha256=${sum%% *}"
		result status=ok boot=again sha256=${sum%% *}
		return
	fi
	if [ -n "$port" ]; then
		ip link set lo up
		ip addr add 10.0.2.15/24 dev eth0 &&
			ip link set eth0 up &&
			ip route add default via 10.0.2.2 ||
			{ result status=fail reason=ip-config; return; }
		t=0
		until [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] || [ "$t" -ge 50 ]; do
			t=$((t + 1))
			sleep 0.1
		done
		react_send before
	fi
	was=$(react_nic)
	echo "KFV-REACT nic $was"
	if [ -n "$at" ]; then
		i=0
		while [ "$i" -lt "$count" ]; do
			echo "KFV-COUNT n=$i"
			if [ "$i" = "$at" ]; then
				dd if=/dev/vda of=/dev/vda bs=512 skip=16 seek=8 count=1 iflag=direct oflag=direct conv=fsync status=none ||
					{ result status=fail reason=copy; return; }
				echo "KFV-REACT copied sector=16"
			fi
			i=$((i + 1))
			sleep 0.2
		done
		result status=ok count=$count
		return
	fi
	react_fire || { result status=fail reason=fire; return; }
	react_watch "$was" || { result status=fail reason=nic-unchanged; return; }
	[ -z "$port" ] || react_send after
	if [ -n "$then" ]; then
		was=$(react_nic)
		react_command "$then" || { result status=fail reason=then; return; }
		react_watch "$was" || { result status=fail reason=nic-unchanged-then; return; }
		[ -z "$port" ] || react_send again
	fi
	sleep "$linger"
	result status=ok $(react_nic)
}

case "$kfv_workload" in
boot) result status=ok ;;
disk) workload_disk ;;
net) workload_net ;;
idle) workload_idle ;;
trigger) workload_trigger ;;
reboot) workload_reboot ;;
counter) workload_counter ;;
hotplug) workload_hotplug ;;
cdrom) workload_cdrom ;;
react) workload_react ;;
share) workload_share ;;
topology) workload_topology ;;
rng) workload_rng ;;
*) result status=fail reason=unknown-workload ;;
esac

echo KFV-DONE
sync
poweroff -f
