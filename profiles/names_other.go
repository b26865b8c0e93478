//go:build !amd64

package profiles

// Profiles describe x86_64 QEMU; on other architectures every name is
// unknown, so a profile fails to load with an error per name instead of
// compiling a filter with the wrong numbers.
var (
	syscallTable []nameValue
	errnoTable   []nameValue
	constTable   []nameValue
	ioctlTable   []nameValue
)
