package schema

import (
	"encoding/json"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// EventTypeName returns the protocol name of an event type ("message",
// "edit", ...), or "" for an unknown type.
func EventTypeName(t parleyv1.EventType) string {
	switch t {
	case parleyv1.EventType_EVENT_TYPE_MESSAGE:
		return "message"
	case parleyv1.EventType_EVENT_TYPE_EDIT:
		return "edit"
	case parleyv1.EventType_EVENT_TYPE_REVOKE:
		return "revoke"
	case parleyv1.EventType_EVENT_TYPE_CREATED:
		return "created"
	case parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED:
		return "member_added"
	case parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED:
		return "member_removed"
	case parleyv1.EventType_EVENT_TYPE_READ:
		return "read"
	}
	return ""
}

// ConvKindName returns "direct" or "group", or "" for an unknown kind.
func ConvKindName(k parleyv1.ConvKind) string {
	switch k {
	case parleyv1.ConvKind_CONV_KIND_DIRECT:
		return "direct"
	case parleyv1.ConvKind_CONV_KIND_GROUP:
		return "group"
	}
	return ""
}

// EventJSON is the JSON form of an event in the client protocol
// (PROTOCOL.md §2), the HTTP API and the tap. Fields that do not apply to a
// type are omitted. For "created", kind is the conversation kind ("direct" or
// "group") and title the group title.
type EventJSON struct {
	Conv    string          `json:"conv"`
	Seq     int64           `json:"seq"`
	Type    string          `json:"type"`
	MsgID   string          `json:"msg_id,omitempty"`
	CMID    string          `json:"cmid,omitempty"`
	From    string          `json:"from,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Title   string          `json:"title,omitempty"`
	Body    json.RawMessage `json:"body,omitempty"`
	Target  int64           `json:"target,omitempty"`
	Members []string        `json:"members,omitempty"`
	TS      int64           `json:"ts"`
}

// ConvJSON is one conversation of a user's list in the client protocol's
// sync_ok and the HTTP API's conversation list: its last seq, the user's
// read cursor, and the message events by others after it (counted up to a
// cap the server documents).
type ConvJSON struct {
	Conv    string `json:"conv"`
	Kind    string `json:"kind"`
	Title   string `json:"title,omitempty"`
	LastSeq int64  `json:"last_seq"`
	ReadSeq int64  `json:"read_seq"`
	Unread  int    `json:"unread"`
}

// ToJSON converts an event to its protocol JSON form. A body that is not
// valid JSON (which the sequencer never accepts) is rendered as a JSON
// string so the result is always valid JSON.
func ToJSON(ev *parleyv1.Event) EventJSON {
	j := EventJSON{
		Conv:    ev.GetConv(),
		Seq:     ev.GetSeq(),
		Type:    EventTypeName(ev.GetType()),
		MsgID:   ev.GetMsgId(),
		CMID:    ev.GetCmid(),
		From:    ev.GetFrom(),
		Kind:    ev.GetKind(),
		Target:  ev.GetTarget(),
		Members: ev.GetMembers(),
		TS:      ev.GetTs(),
	}
	if b := ev.GetBody(); len(b) > 0 {
		if ValidJSON(b) {
			j.Body = b
		} else {
			j.Body, _ = json.Marshal(string(b))
		}
	}
	if ev.GetType() == parleyv1.EventType_EVENT_TYPE_CREATED {
		j.Kind = ConvKindName(ev.GetConvKind())
		j.Title = ev.GetTitle()
	}
	return j
}
