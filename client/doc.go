// Package client is the Go SDK for Parley's WebSocket client protocol
// (PROTOCOL.md §2): it connects to one of a list of connector nodes,
// authenticates, sends commands and delivers the conversations' events.
//
// # Delivery guarantee
//
// Events delivers, for every conversation the client tracks, the events in
// seq order, each exactly once and with no gap: if it delivered seq 7 of a
// conversation, the next event of that conversation it delivers is seq 8.
// The server's pushes are only hints; the conversation's history is the
// truth. The client remembers, per conversation, the last seq it delivered:
//
//   - a push at or below it is a duplicate and is dropped;
//   - the next seq is delivered;
//   - a push further ahead reveals a gap: the client fetches the missing
//     events with history (paging while the server says there is more,
//     and waiting with backoff while the store has not caught up yet),
//     delivers them, then the pushed one. A failed history call is retried,
//     never skipped, so a gap is never papered over.
//
// A conversation becomes tracked when this client creates it (from seq 0,
// so its first event is "created"), when Track or Config.Tracked names it
// (after the given seq, which a client that persisted its position passes),
// or when a push for it arrives (from that push's seq: events before it are
// not fetched). A push alone cannot reveal events that were never pushed
// and are not followed by another push; those arrive with the next push or
// the next catch-up.
//
// One goroutine does all delivery, fed by the socket reader in arrival
// order, so events of one conversation are never delivered out of order;
// while it fetches history, pushes are queued (a bounded queue: beyond it,
// pushes are dropped and recovered from history). If the application stops
// reading Events, delivery waits; requests and their replies are not held
// up by it.
//
// # Reconnects
//
// After the first connection (Dial returns once it is authenticated), the
// client keeps a connection open in the background. When it drops — the
// node drains (close 4009), the client is too slow (4003), the network
// fails, the node dies, or nothing is heard for three ping intervals (up to
// a quarter interval more) — the
// client reconnects to the next URL of Config.URLs (round-robin), after a
// jittered exponential backoff between Config.MinBackoff and
// Config.MaxBackoff, asking Config.Token for a token each time. After every
// reconnect it first catches up every tracked conversation with history
// after its last delivered seq until the server reports no more, and only
// then goes on with pushes, so a reconnect shows the application neither a
// gap nor a duplicate. A second catch-up follows a few seconds later, for
// events sequenced while the client was away that the store did not hold
// yet at the first; it skips the conversations a push was delivered for
// since the connect (everything before that push was delivered, and what
// follows it is pushed; a push that fails between the server's nodes is
// recovered by the conversation's next push or the next connect).
//
// A refusal — the server closing the authentication with 4001 (bad or
// expired token) or 4004 (too many connections), or refusing the upgrade
// with HTTP 401/403 — makes Dial fail at once. In the background, the client
// tries again with a fresh token (4004 is retried like an unreachable node:
// the node may still hold the device's old connections); after three other
// refusals with no successful connection between them it stops for good: Done is closed, Err returns the *CloseError, Events and Typings are
// closed, and every call fails with that error.
//
// # Requests
//
// Calls wait for a connection while the client is reconnecting, until their
// context ends. Send, SendCMID, Edit, Revoke, Read, Members, History and
// Create are safe to repeat, and are retried — with the same cmid (and, for
// a group, the same client-chosen conversation id), so a retry never
// creates a second message or group — on `unavailable` and `rate_limited`
// errors, when no reply comes within Config.RequestTimeout, and when the
// connection drops, until they succeed or their context ends. Other errors
// (forbidden, bad_request, not_found, ...) return at once as *Error. Ping
// is tried once.
//
// Requests are paced under the frame rate the server announces in auth_ok,
// so a busy client waits its turn rather than meeting rate_limited.
// Requests made together share system calls: a connection writes the
// frames queued while it writes in one batch.
//
// The client sends a ping when the connection has been quiet for
// Config.PingInterval (default 20s), so the server's idle timeout does not
// close it, and answers the server's WebSocket pings.
package client
