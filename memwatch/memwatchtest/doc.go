// Package memwatchtest measures memwatch against a live QEMU for the
// bench and the integration tests, as net/http/httptest serves
// net/http's tests.
//
// It is not production code and kfv-run must not import it: Measure
// tampers with QEMU's code on purpose (it flips a byte of QEMU's entry
// point through /proc/PID/mem) to time how soon memwatch finds and
// scrubs the change. EntryPoint names that byte.
package memwatchtest
