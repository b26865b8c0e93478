// Package memwatch watches the integrity of QEMU's memory: its mappings,
// baselines of code and read-only data, incremental scans and scrubbing.
//
// It alone opens /proc/PID/mem. Its parsers (ParseMaps) are pure and used
// by the rest of kfv to learn what backs an address.
package memwatch
