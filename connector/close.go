package connector

import "fmt"

// Close codes of the client protocol (PROTOCOL.md §2). 1009 (frame too
// large) comes from the WebSocket layer itself.
const (
	CloseBadToken     = 4001 // bad or expired token
	CloseNoAuth       = 4002 // no auth frame in time
	CloseSlowConsumer = 4003 // outbound queue full
	CloseTooMany      = 4004 // too many connections for this user
	ClosePolicy       = 4008 // policy, e.g. repeated flooding
	CloseDraining     = 4009 // server draining: reconnect, possibly elsewhere
	CloseTooLarge     = 1009 // frame larger than the limit
)

// CloseError is why the server closed a connection.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string { return fmt.Sprintf("close %d: %s", e.Code, e.Reason) }
