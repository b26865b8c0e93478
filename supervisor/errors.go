package supervisor

import "fmt"

// Exit codes of kfv-run's own failures, as a shell reports them
// (README.md, Exit status).
const (
	exitLaunch   = 125 // kfv failed before QEMU started
	exitNotExec  = 126 // QEMU is not executable
	exitNotFound = 127 // QEMU not found
)

// LaunchError is a failure before QEMU ran. Code is the exit status
// kfv-run returns for it.
type LaunchError struct {
	Code int
	Err  error
}

func (e *LaunchError) Error() string { return e.Err.Error() }
func (e *LaunchError) Unwrap() error { return e.Err }

func launchErr(code int, format string, a ...any) *LaunchError {
	return &LaunchError{Code: code, Err: fmt.Errorf(format, a...)}
}
