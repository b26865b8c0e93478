// Package guest builds the guests kfv's integration tests and demos boot
// under QEMU: tiny raw-code guests assembled here, and a Linux guest made
// from Debian's kernel and busybox packages.
package guest
