package connector

import "fmt"

// Close codes of the client protocol (PROTOCOL.md §2), and the WebSocket
// codes the server sends (RFC 6455 §7.4.1).
const (
	CloseNormal        = 1000 // the session ended
	CloseProtocolError = 1002 // a frame broke the WebSocket protocol
	CloseBadToken      = 4001 // bad or expired token
	CloseNoAuth        = 4002 // no auth frame in time
	CloseSlowConsumer  = 4003 // outbound queue full
	CloseTooMany       = 4004 // too many connections for this user
	ClosePolicy        = 4008 // policy, e.g. repeated flooding
	CloseDraining      = 4009 // server draining: reconnect, possibly elsewhere
	CloseTooLarge      = 1009 // frame larger than the limit

	// closeAbnormal is the code of a session that ended without a close
	// frame (the connection failed); it is never sent.
	closeAbnormal = 1006
)

// CloseError is why the server closed a connection.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string { return fmt.Sprintf("close %d: %s", e.Code, e.Reason) }
