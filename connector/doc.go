// Package connector is the edge of Parley. This part of it is the command
// path every client request and HTTP API call goes through: Commander
// turns a command into a record on parley.commands (acks=all, keyed by
// conversation) and waits for the sequencer's outcome on the connector's
// own partition of parley.outcomes, so the caller learns what became of
// it: the event (or, for a retried cmid, the original), or the rejection.
//
// The WebSocket gateway (/v1/ws), the server-to-server HTTP API beside it
// on the public listener (httpapi.go), presence and the push endpoint are
// built on top of it.
package connector
