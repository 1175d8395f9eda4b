package schema

import (
	"errors"
	"fmt"
)

// Errors of the record decoders in this package. A consumer skips a record
// that fails with either, logs why and counts it by SkipReason; it never
// retries one (the same bytes fail the same way every time).
var (
	// ErrUndecodable: the value is not the protobuf message its topic holds.
	ErrUndecodable = errors.New("undecodable record")
	// ErrMalformed: the value decodes but breaks a rule of its topic (a key
	// that is not its conversation, an invalid id, a seq below 1, an
	// unknown type, a field over its limit, ...).
	ErrMalformed = errors.New("malformed record")
)

// Reasons a consumer skips a record without acting on it: the values of the
// reason label of the parley_records_skipped_total metric. The set is
// fixed, so that the metric's series stay few.
const (
	SkipUndecodable = "undecodable"
	SkipMalformed   = "malformed"
	// SkipOutOfSequence: a well-formed event that does not continue its
	// conversation: after the consumer took seq n of it since it was
	// assigned the partition, anything but n+1 (a jump, or a seq taken
	// already).
	// The sequencer never writes one; it comes from another producer.
	SkipOutOfSequence = "out_of_sequence"
	// SkipReplayed: a command the sequencer has applied already, handed
	// back by its Kafka client after going back in the log.
	SkipReplayed = "replayed"
)

// SkipReasons lists every reason, for metrics that start each at zero.
var SkipReasons = []string{SkipUndecodable, SkipMalformed, SkipOutOfSequence, SkipReplayed}

// SkipReason maps an error of a decoder in this package to its reason:
// SkipUndecodable for ErrUndecodable, SkipMalformed for anything else.
func SkipReason(err error) string {
	if errors.Is(err, ErrUndecodable) {
		return SkipUndecodable
	}
	return SkipMalformed
}

func undecodable(what string, err error) error {
	return fmt.Errorf("%w: not a %s: %v", ErrUndecodable, what, err)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Clip bounds a piece of untrusted input quoted in an error or a log line:
// at most 64 bytes, then "...".
func Clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
