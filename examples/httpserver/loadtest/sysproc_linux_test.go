package loadtest

import "syscall"

// childAttr kills a child when the test process dies without running its
// cleanups (a -timeout panic, say), so no server outlives the test.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
