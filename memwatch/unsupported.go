package memwatch

import "errors"

// ErrUnsupported is returned where memwatch cannot work: off Linux, and
// for syscall injection off x86-64.
var ErrUnsupported = errors.New("memwatch: not supported on this platform")
