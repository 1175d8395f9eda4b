package connector

import (
	"errors"
	"fmt"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// ErrUnavailable means the command's fate is unknown: the log did not take
// it, or no outcome arrived within the reply timeout. Retrying with the
// same cmid is always safe (a duplicate is answered with the original).
var ErrUnavailable = errors.New("connector: unavailable")

// RejectedError is a command the sequencer refused.
type RejectedError struct {
	Reason  parleyv1.Reason
	Message string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("connector: rejected (%s): %s", e.Reason, e.Message)
}

// Code is the client protocol's error code for the rejection.
func (e *RejectedError) Code() string { return schema.ErrorCode(e.Reason) }
