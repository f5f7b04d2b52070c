package journald

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts journalctl in a process group of its own, killed as a
// whole when the source stops, and has the kernel kill it when etld dies
// (kill -9 included), so that no journalctl outlives the daemon.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killProc(cmd) }
}

// killProc kills journalctl's process group.
func killProc(cmd *exec.Cmd) error {
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
