package admin

import (
	"fmt"
	"log"
	"strings"

	"github.com/rs/zerolog"
)

// promLogger sends promhttp's errors (a collector that failed) to the log.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error().Msg(strings.TrimSpace(fmt.Sprintln(v...)))
}

// newStdLogger sends net/http's own messages (a broken connection, a
// handler panic) to the log as warnings.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(lineWriter{l}, "", 0)
}

type lineWriter struct{ log zerolog.Logger }

func (w lineWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
