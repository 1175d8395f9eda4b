package client

import "encoding/json"

// Message is one message of a Timeline, with its edits and revocation
// applied.
type Message struct {
	Seq   int64
	MsgID string
	From  string
	Kind  string
	// Body is the latest body: the message's own, or its last edit's; nil
	// once revoked.
	Body json.RawMessage
	TS   int64
	// Edited is the seq of the last edit, 0 if none.
	Edited int64
	// Revoked is the seq of the revoke, 0 if none.
	Revoked int64
}

// Timeline is one conversation's messages as its members see them, built
// by applying its events in seq order (as Events delivers them, or as
// History returns them):
//
//   - "message" adds a message;
//
//   - "edit" replaces the body of the message at its target, if that
//     message is not revoked (only its author can edit it);
//
//   - "revoke" removes the body of the message at its target for good: the
//     message stays, marked revoked, so that the conversation keeps its
//     shape. The server, too, serves a revoked message and its edits
//     without a body.
//
//   - "read" moves its author's read receipt: ReadBy[user] is the highest
//     seq that user has read (a cursor never moves back).
//
// Other events (created, member changes) do not change messages; Apply
// only records their seq. A Timeline is not safe for concurrent use.
type Timeline struct {
	Conv     string
	LastSeq  int64
	Messages []*Message // in seq order
	// ReadBy holds the read receipts: user -> highest seq read.
	ReadBy map[string]int64
	bySeq  map[int64]*Message
}

// Apply applies ev, the next event of the conversation (an event at or
// below LastSeq is ignored, so a replayed page changes nothing).
func (t *Timeline) Apply(ev Event) {
	if ev.Seq <= t.LastSeq || (t.Conv != "" && ev.Conv != t.Conv) {
		return
	}
	t.Conv, t.LastSeq = ev.Conv, ev.Seq
	if t.bySeq == nil {
		t.bySeq, t.ReadBy = make(map[int64]*Message), make(map[string]int64)
	}
	switch ev.Type {
	case "message":
		m := &Message{Seq: ev.Seq, MsgID: ev.MsgID, From: ev.From, Kind: ev.Kind, Body: ev.Body, TS: ev.TS}
		t.Messages = append(t.Messages, m)
		t.bySeq[ev.Seq] = m
	case "edit":
		if m := t.bySeq[ev.Target]; m != nil && m.Revoked == 0 {
			m.Body, m.Edited = ev.Body, ev.Seq
		}
	case "revoke":
		if m := t.bySeq[ev.Target]; m != nil {
			m.Body, m.Revoked = nil, ev.Seq
		}
	case "read":
		t.ReadBy[ev.From] = max(t.ReadBy[ev.From], ev.Target)
	}
}

// Message returns the message at seq, or nil.
func (t *Timeline) Message(seq int64) *Message { return t.bySeq[seq] }
