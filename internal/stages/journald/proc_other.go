//go:build !linux

package journald

import "os/exec"

// setProcAttr: outside Linux, stopping the source kills journalctl itself.
func setProcAttr(cmd *exec.Cmd) {
	cmd.Cancel = func() error { return killProc(cmd) }
}

// killProc kills journalctl.
func killProc(cmd *exec.Cmd) error { return cmd.Process.Kill() }
