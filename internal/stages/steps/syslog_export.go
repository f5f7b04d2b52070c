package steps

import (
	"time"

	"github.com/etld/etld/internal/stages"
)

// NewParseSyslog returns the parse_syslog step for a config built in Go
// (the syslog source parses what it receives with it, so that both give
// the same fields and reject the same lines). The config is validated
// here; timezone "" means UTC.
func NewParseSyslog(c *ParseSyslogConfig) (stages.Step, error) {
	if c.Timezone == "" {
		c.Timezone = "UTC"
	}
	if err := validate(c); err != nil {
		return nil, err
	}
	return newParseSyslog(c, time.Now), nil
}
