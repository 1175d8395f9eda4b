// Package store defines the timeline store: the read model the writer
// builds from the events topic and the connector serves reads from. It
// holds each conversation's events by seq, its head (kind, title, last seq),
// its membership with read cursors, and each user's conversation list.
//
// Every write is an idempotent projection of events: applying any prefix of
// the events log, then the whole log again (in log order per conversation),
// leaves the same state as applying the log once. Implementations: package
// pebblestore (embedded) and, in scale-out mode, Cassandra. The conformance
// suite in package storetest runs against each.
package store

import (
	"context"
	"errors"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// ErrNotFound is returned for an unknown conversation or membership.
var ErrNotFound = errors.New("store: not found")

// MaxRangeLimit caps Range.Limit.
const MaxRangeLimit = 1000

// Store is a timeline store. Methods are safe for concurrent use.
type Store interface {
	// Append writes a batch of events. Within a conversation the batch must
	// be in seq order; a batch may repeat events already stored (replays
	// overwrite with the same data). The events must form a log the
	// sequencer could have written (in particular, a member's read targets
	// grow). When Append returns nil the batch is durable.
	Append(ctx context.Context, events []*parleyv1.Event) error
	// Events returns up to r.Limit events of conv in ascending seq order:
	// those with seq > r.After, or, if r.Before > 0, the last ones with
	// seq < r.Before. more reports whether further events exist in that
	// direction (beyond the returned ones). A revoked message, and every
	// edit of it, comes without its body (Redact).
	Events(ctx context.Context, conv string, r Range) (events []*parleyv1.Event, more bool, err error)
	// Conversation returns conv's head, or ErrNotFound.
	Conversation(ctx context.Context, conv string) (Conversation, error)
	// Membership returns user's membership of conv, current or past, or
	// ErrNotFound if user never was a member.
	Membership(ctx context.Context, conv, user string) (Membership, error)
	// Members returns the current members of conv, ordered by user id.
	Members(ctx context.Context, conv string) ([]Membership, error)
	// UserConversations returns the conversations user is currently a
	// member of, ordered by conversation id.
	UserConversations(ctx context.Context, user string) ([]UserConversation, error)
	// CountMessages counts the message events of conv with after < seq <=
	// upTo that are not from except, stopping at max (max >= 1): a user's
	// unread count.
	CountMessages(ctx context.Context, conv string, after, upTo int64, except string, max int) (int, error)
	// Close releases the store.
	Close() error
}

// Range selects events by seq; see Store.Events.
type Range struct {
	After  int64
	Before int64
	Limit  int
}

// Conversation is a conversation's head.
type Conversation struct {
	Conv    string
	Kind    parleyv1.ConvKind
	Title   string
	LastSeq int64
	// CreatedTS is the created event's time, Unix ms.
	CreatedTS int64
}

// Membership is one user's membership of one conversation.
type Membership struct {
	Conv string
	User string
	// JoinedSeq is the seq of the event that last made the user a member.
	JoinedSeq int64
	// RemovedSeq is the seq of the event that removed them; 0 while a member.
	RemovedSeq int64
	// ReadSeq is the user's read cursor: it starts at JoinedSeq (nothing
	// from before joining is unread) and only moves forward while they stay.
	ReadSeq int64
}

// Current reports whether the user is a member now.
func (m Membership) Current() bool { return m.JoinedSeq > 0 && m.RemovedSeq == 0 }

// UserConversation is one entry of a user's conversation list.
type UserConversation struct {
	Conversation
	JoinedSeq int64
	ReadSeq   int64
}

// ErrInvalidRange is returned for a Range with a negative bound, both After
// and Before set, or a Limit outside 1..MaxRangeLimit.
var ErrInvalidRange = errors.New("store: invalid range")

// Validate reports whether r is a valid Range.
func (r Range) Validate() error {
	if r.After < 0 || r.Before < 0 || (r.After > 0 && r.Before > 0) || r.Limit < 1 || r.Limit > MaxRangeLimit {
		return ErrInvalidRange
	}
	return nil
}
