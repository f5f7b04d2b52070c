// Package journald holds the `journald` source: the systemd journal, read
// through a journalctl child process.
package journald

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/etld/etld/internal/stages"
)

// Config is the config of the `journald` source.
type Config struct {
	JournalctlPath  string          `yaml:"journalctl_path" doc:"the journalctl program to run; a bare name is looked up in PATH"`
	Units           []string        `yaml:"units" doc:"read only these systemd units (journalctl --unit, one per unit, e.g. nginx.service); empty reads every entry"`
	Directory       string          `yaml:"directory" doc:"read the journal files in this directory (journalctl --directory) instead of the system journal, relative to the pipeline file"`
	CurrentBootOnly bool            `yaml:"current_boot_only" doc:"read only the current boot's entries (the last boot in directory); false reads every boot (journalctl --merge), which collecting other machines' journals needs"`
	StartAt         string          `yaml:"start_at" doc:"where to start without a checkpoint: beginning (the oldest entry of the boot, or of the journal with current_boot_only false) or end (only entries logged from now on)"`
	Follow          bool            `yaml:"follow" doc:"keep reading new entries as they are logged; false reads what the journal holds and ends"`
	MaxLineBytes    stages.ByteSize `yaml:"max_line_bytes" doc:"largest entry, as a line of JSON; a larger one is a bad record that keeps its first max_line_bytes bytes"`
}

// Values of Config.StartAt.
const (
	StartAtBeginning = "beginning"
	StartAtEnd       = "end"
)

const (
	defaultMaxLineBytes = 1 << 20
	maxMaxLineBytes     = 1 << 30
)

// NewConfig returns a Config with its defaults.
func NewConfig() *Config {
	return &Config{
		JournalctlPath:  "journalctl",
		CurrentBootOnly: true,
		StartAt:         StartAtBeginning,
		Follow:          true,
		MaxLineBytes:    defaultMaxLineBytes,
	}
}

// Validate implements stages.Validator.
func (c *Config) Validate() error {
	var errs []error
	if c.JournalctlPath == "" {
		errs = append(errs, stages.FieldErr("journalctl_path", errors.New("must not be empty")))
	}
	for i, u := range c.Units {
		if strings.TrimSpace(u) == "" || strings.ContainsAny(u, "\n\x00") {
			errs = append(errs, stages.FieldErr(fmt.Sprintf("units[%d]", i), fmt.Errorf("want a unit name such as nginx.service, got %q", u)))
		}
	}
	if c.StartAt != StartAtBeginning && c.StartAt != StartAtEnd {
		errs = append(errs, stages.FieldErr("start_at", fmt.Errorf("must be %q or %q, got %q", StartAtBeginning, StartAtEnd, c.StartAt)))
	}
	if c.MaxLineBytes <= 0 || c.MaxLineBytes > maxMaxLineBytes {
		errs = append(errs, stages.FieldErr("max_line_bytes", fmt.Errorf("must be between 1 and %v, got %d", stages.ByteSize(maxMaxLineBytes), int64(c.MaxLineBytes))))
	}
	return errors.Join(errs...)
}

// ResolvePaths implements stages.PathResolver: directory, and a
// journalctl_path with a slash in it, are relative to the pipeline file.
func (c *Config) ResolvePaths(dir string) {
	if c.Directory != "" && !filepath.IsAbs(c.Directory) {
		c.Directory = filepath.Join(dir, c.Directory)
	}
	if strings.ContainsRune(c.JournalctlPath, '/') && !filepath.IsAbs(c.JournalctlPath) {
		c.JournalctlPath = filepath.Join(dir, c.JournalctlPath)
	}
}

// CheckFiles implements stages.FileChecker: directory must be a
// directory. (A missing journalctl is not a config error: the source
// reports it as unhealthy and retries, like one that exits.)
func (c *Config) CheckFiles() error {
	if c.Directory == "" {
		return nil
	}
	fi, err := os.Stat(c.Directory)
	switch {
	case err != nil:
		return stages.FieldErr("directory", err)
	case !fi.IsDir():
		return stages.FieldErr("directory", fmt.Errorf("%s is not a directory", c.Directory))
	}
	return nil
}

// Finite implements stages.Finiter: the source ends only when it does not
// follow the journal.
func (c *Config) Finite() bool { return !c.Follow }

// ProducesFields implements stages.FieldsProducer: every record is one of
// journalctl's JSON objects.
func (c *Config) ProducesFields() bool { return true }

// All returns the factories of this package: the `journald` source.
func All() []stages.Factory { return []stages.Factory{Factory()} }

// Factory returns the stages.Factory of the `journald` source.
func Factory() stages.Factory {
	return stages.Factory{
		Kind:      stages.KindSource,
		Type:      "journald",
		Doc:       "Reads the systemd journal through journalctl, one record per entry with the entry's fields; exactly once across restarts by the journal cursor.",
		NewConfig: func() any { return NewConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("journald source %q: config is %T, want *Config", s.ID, cfg)
			}
			return newSource(s, c), nil
		},
	}
}
