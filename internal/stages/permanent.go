package stages

import "errors"

// PermanentError is what Sink.Write returns when the first record it did
// not accept, b.Records[0] (Write trims b.Records to the records it did
// not accept), can never be written: retrying it would fail forever, for
// example a record the destination refuses as malformed or too large.
//
// The runtime then rejects that record with Err, as a bad record: it goes
// to the pipeline's dead-letter sink in the usual dead-letter line (or is
// counted in etld_stage_records_dropped_total{reason="bad_record"} when
// the pipeline has none, or when the sink is the dead-letter sink), and
// calls Write again at once, without backoff, with the records after it.
// Every record is so written once or rejected once; none is retried
// forever.
//
// Any other error is transient: the runtime retries Write with the same
// remaining records, backing off, until it works (SPEC §3.4). A sink that
// cannot tell which kind of error it got should treat it as transient:
// a transient error only slows the pipeline down, a wrong permanent one
// loses a record to the dead letter.
//
// Wrap the cause with Permanent; match it with errors.As.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }

func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as a permanent failure to write b.Records[0] (see
// PermanentError). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is, or wraps, a PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// MisconfiguredError is what Open returns when the outside world says the
// stage's configuration is wrong and retrying cannot help: a wrong
// password, a topic or stream that does not exist, a certificate the
// server refuses. At start, `etld run` then exits 2 (an invalid config),
// not 1; on a reload the old pipeline keeps running, as for any failed
// Open. A server that cannot be reached is not misconfiguration: the
// stage retries with backoff and reports it through HealthReporter.
//
// Wrap the cause with Misconfigured; match it with errors.As.
type MisconfiguredError struct {
	Err error
}

func (e *MisconfiguredError) Error() string { return e.Err.Error() }

func (e *MisconfiguredError) Unwrap() error { return e.Err }

// Misconfigured marks err as a configuration error found at Open (see
// MisconfiguredError). Misconfigured(nil) is nil.
func Misconfigured(err error) error {
	if err == nil {
		return nil
	}
	return &MisconfiguredError{Err: err}
}
