package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// RunResult is one finished QEMU run.
type RunResult struct {
	Serial     []byte // stdout: the guest's serial console with -serial stdio
	Stderr     []byte
	ExitStatus int // QEMU's exit status
	Elapsed    time.Duration
}

// RunQEMU runs QEMUBinary() with args until it exits or ctx ends, and
// collects its output. A non-zero exit status is not an error (raw
// guests always exit non-zero through isa-debug-exit); failing to start
// and ctx ending are.
func RunQEMU(ctx context.Context, args []string) (RunResult, error) {
	var r RunResult
	qemu, err := QEMUBinary()
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	r.Elapsed = time.Since(start)
	r.Serial, r.Stderr = stdout.Bytes(), stderr.Bytes()
	if ctx.Err() != nil {
		return r, fmt.Errorf("run %s: %w (after %v)", qemu, ctx.Err(), r.Elapsed.Round(time.Millisecond))
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.ExitStatus = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("run %s: %w", qemu, err)
	}
	return r, nil
}
