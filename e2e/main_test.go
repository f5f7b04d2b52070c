package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// etldBin is the etld binary under test, built by TestMain.
var etldBin string

// repoRoot is the module root (where examples/ lives).
var repoRoot string

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "etld-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	if err := setup(tmp); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	// The test process itself must not leak goroutines either (exec's
	// copying goroutines, pollers): every etld run is waited for.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(tmp) }))
}

// setup finds the repository root and builds etld into dir, unless
// ETLD_E2E_BIN names a binary to use.
func setup(dir string) error {
	repoRoot = findRepoRoot()
	if bin := os.Getenv("ETLD_E2E_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		etldBin = abs
		return nil
	}
	etldBin = filepath.Join(dir, "etld")
	args := []string{"build", "-o", etldBin}
	if os.Getenv("ETLD_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/etld")
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// findRepoRoot asks the go command for the module root, falling back to
// the parent of this package's directory.
func findRepoRoot() string {
	if out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			return dir
		}
	}
	abs, err := filepath.Abs("..")
	if err != nil {
		return ".."
	}
	return abs
}
