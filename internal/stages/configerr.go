package stages

import "errors"

// ConfigError is an Open error that the outside world's answer to the
// stage's configuration explains: a broker stream that does not exist,
// credentials the server refuses, a certificate it rejects. At start
// etld exits 2 for it, as for an invalid pipeline file, instead of 1 (a
// runtime failure); on a reload the running pipeline stays, as for any
// Open error. Something that may be over by itself (a server that cannot
// be reached) is not a ConfigError: the stage retries it instead.
type ConfigError struct {
	Err error
}

func (e *ConfigError) Error() string { return e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// Misconfigured wraps err as a ConfigError; Misconfigured(nil) is nil.
func Misconfigured(err error) error {
	if err == nil {
		return nil
	}
	return &ConfigError{Err: err}
}

// IsConfigError reports whether err is, or wraps, a ConfigError.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}
