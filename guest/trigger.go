package guest

import (
	"fmt"
	"strconv"
)

// The trigger protocol between a guest and the test implant
// (integration/implant): the command TriggerMagic NUL payload NUL
// argument NUL, sent through a device so that QEMU's own thread carries
// it to the implant.
const (
	// WorkloadTrigger writes the command in one sector with O_DIRECT to
	// /dev/vda at sector kfv.sector (default TriggerSector), prints
	// KFV-RESULT, then sleeps kfv.seconds. Needs DiskArgs with a raw
	// image, so that QEMU's raw driver writes the sector from a worker
	// thread. Build its command line with TriggerCmdline.
	WorkloadTrigger = "trigger"
	// TriggerMagic opens every command.
	TriggerMagic = "KFV-IMPLANT"
	// TriggerSector is where the trigger workload writes the command.
	TriggerSector = 8
	// TriggerPort is the I/O port the raw trigger guest writes the
	// command to, byte by byte (the implant reads it from KVM_EXIT_IO).
	TriggerPort = 0x5f0
	// maxTriggerField bounds payload and argument (the implant's buffer
	// is 512 bytes each; the kernel command line is 2 KiB).
	maxTriggerField = 400
)

// TriggerCommand returns the command bytes for payload and arg.
func TriggerCommand(payload, arg string) ([]byte, error) {
	if err := checkTrigger(payload, arg); err != nil {
		return nil, err
	}
	b := []byte(TriggerMagic)
	b = append(b, 0)
	b = append(b, payload...)
	b = append(b, 0)
	b = append(b, arg...)
	return append(b, 0), nil
}

// TriggerCmdline returns the extra kernel command line words for the
// trigger workload: payload and arg for the implant, and seconds to idle
// after the command was written (so that the host can look at the VM).
func TriggerCmdline(payload, arg string, seconds int) ([]string, error) {
	if err := checkTrigger(payload, arg); err != nil {
		return nil, err
	}
	if seconds < 0 {
		return nil, fmt.Errorf("trigger idle seconds %d: must not be negative", seconds)
	}
	w := []string{"kfv.payload=" + payload, "kfv.seconds=" + strconv.Itoa(seconds)}
	if arg != "" {
		w = append(w, "kfv.arg="+arg)
	}
	return w, nil
}

// checkTrigger: the payload is a name of [a-z0-9-], the argument printable
// ASCII without spaces or quotes (it travels as one word of the kernel
// command line and is quoted by the implant's shell payloads).
func checkTrigger(payload, arg string) error {
	if payload == "" || len(payload) > maxTriggerField {
		return fmt.Errorf("trigger payload %q: want 1-%d characters", payload, maxTriggerField)
	}
	for _, c := range payload {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("trigger payload %q: only a-z, 0-9 and - are allowed", payload)
		}
	}
	if len(arg) > maxTriggerField {
		return fmt.Errorf("trigger argument of %d bytes: at most %d", len(arg), maxTriggerField)
	}
	for _, c := range arg {
		if c <= ' ' || c > '~' || c == '\'' || c == '"' || c == '\\' {
			return fmt.Errorf("trigger argument %q: only printable ASCII without spaces, quotes or backslashes", arg)
		}
	}
	return nil
}
