package client

import (
	"errors"
	"fmt"

	"github.com/parley-im/parley/schema"
)

// Error codes of the protocol's {"op":"error"} replies (PROTOCOL.md §2).
const (
	CodeBadRequest   = schema.CodeBadRequest
	CodeUnauthorized = schema.CodeUnauthorized
	CodeForbidden    = schema.CodeForbidden
	CodeNotFound     = schema.CodeNotFound
	CodeTooLarge     = schema.CodeTooLarge
	CodeRateLimited  = schema.CodeRateLimited
	CodeUnavailable  = schema.CodeUnavailable
	CodeInternal     = schema.CodeInternal
)

// Error is an {"op":"error"} reply from the server.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "parley: " + e.Code
	}
	return "parley: " + e.Code + ": " + e.Message
}

// Is makes errors.Is match any *Error with the same code, so the sentinels
// below work: errors.Is(err, client.ErrForbidden).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is, one per error code.
var (
	ErrBadRequest   = &Error{Code: CodeBadRequest}
	ErrUnauthorized = &Error{Code: CodeUnauthorized}
	ErrForbidden    = &Error{Code: CodeForbidden}
	ErrNotFound     = &Error{Code: CodeNotFound}
	ErrTooLarge     = &Error{Code: CodeTooLarge}
	ErrRateLimited  = &Error{Code: CodeRateLimited}
	ErrUnavailable  = &Error{Code: CodeUnavailable}
	ErrInternal     = &Error{Code: CodeInternal}
)

// IsCode reports whether err is, or wraps, an *Error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Close codes the server uses (PROTOCOL.md §2).
const (
	CloseBadToken     = 4001
	CloseNoAuth       = 4002
	CloseSlowConsumer = 4003
	CloseTooMany      = 4004
	ClosePolicy       = 4008
	CloseDraining     = 4009
	CloseTooLarge     = 1009
)

// CloseError is a connection the server closed with a close frame. Dial
// returns it when the server refuses the first connection (4001 bad token,
// 4004 too many connections, 4009 draining); Err returns it when the client
// stopped for good after repeated refusals.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("parley: connection closed by the server (%d %s)", e.Code, e.Reason)
}

// IsClose reports whether err is, or wraps, a *CloseError with code.
func IsClose(err error, code int) bool {
	var e *CloseError
	return errors.As(err, &e) && e.Code == code
}

var (
	// ErrClosed is returned by calls on a client that Close closed.
	ErrClosed = errors.New("parley: client closed")
	// ErrNotConnected is returned by Typing while there is no connection.
	ErrNotConnected = errors.New("parley: not connected")
	// ErrConnectionLost is returned by a call that is not retried (Ping, a
	// group Create) when the connection dropped after the request was
	// written: its outcome is unknown.
	ErrConnectionLost = errors.New("parley: connection lost before the reply")
	// ErrNoReply is returned by a call that is not retried when no reply
	// came within Config.RequestTimeout.
	ErrNoReply = errors.New("parley: no reply within the request timeout")
)

// errNotSent marks an attempt that never reached the socket: any request,
// even one that is not idempotent, may be tried again.
var errNotSent = errors.New("parley: connection lost before the request was sent")
