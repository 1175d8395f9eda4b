package schema

import (
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// DecodeEvent decodes a record of the events topic and checks that it is
// well-formed (CheckEvent) and keyed by its conversation. The error wraps
// ErrUndecodable or ErrMalformed; its text quotes at most a few dozen bytes
// of the record.
//
// Every event the sequencer writes passes. What passes is an event every
// timeline store can hold: ids are within their limits and alphabets (so
// they never break a store's key layout), and bodies, titles and kinds are
// within theirs. What passes may still not continue its conversation (a seq
// far ahead, say): that takes the conversation's state to tell; see
// SkipOutOfSequence.
func DecodeEvent(key, value []byte) (*parleyv1.Event, error) {
	ev := new(parleyv1.Event)
	return checkedEvent(key, ev, UnmarshalEvent(value, ev))
}

// DecodeSharedEvent decodes and checks a record of the events topic as
// DecodeEvent does, except that the event's strings and bytes share value's
// memory (UnmarshalVTUnsafe), as DecodeSharedCommand's do: value must stay
// unchanged while the event is in use, and whatever outlives it must be
// copied, or it keeps all of value's memory alive. The writer and fanout
// decode every event with it: the writer hands the batch to the store and
// keeps only the conversation ids it tracks, fanout pushes the event and
// keeps only the members it caches, and copying every field was most of
// their allocations for an event.
func DecodeSharedEvent(key, value []byte) (*parleyv1.Event, error) {
	ev := new(parleyv1.Event)
	return checkedEvent(key, ev, decode(value, ev, ev.UnmarshalVTUnsafe, plainEvent))
}

// checkedEvent is ev, decoded from a record under key with the error err,
// if the decoding succeeded and ev passes DecodeEvent's checks.
func checkedEvent(key []byte, ev *parleyv1.Event, err error) (*parleyv1.Event, error) {
	if err != nil {
		return nil, undecodable("parley.v1.Event", err)
	}
	if err := CheckEvent(ev); err != nil {
		return nil, err
	}
	if ev.Conv != string(key) {
		return nil, malformed("record key %q is not the event's conversation %q", Clip(string(key)), ev.Conv)
	}
	return ev, nil
}

// CheckEvent reports whether ev is an event the sequencer could have
// written, judged on its own: a valid conversation id and sender, a seq of
// at least 1 (and seq 1 exactly for CREATED, which no other type takes), a
// msg_id, and the fields of its type within their limits. The error wraps
// ErrMalformed.
func CheckEvent(ev *parleyv1.Event) error {
	switch {
	case !ValidConvID(ev.Conv):
		return malformed("invalid conversation id %q", Clip(ev.Conv))
	case ev.Seq < 1:
		return malformed("seq %d is below 1", ev.Seq)
	case ev.MsgId == "" || len(ev.MsgId) > MaxMsgIDLen:
		return malformed("missing or oversized msg_id (%d bytes)", len(ev.MsgId))
	case !ValidUserID(ev.From):
		return malformed("invalid sender %q", Clip(ev.From))
	case ev.Cmid != "" && !ValidCMID(ev.Cmid):
		return malformed("invalid cmid %q", Clip(ev.Cmid))
	case (ev.Type == parleyv1.EventType_EVENT_TYPE_CREATED) != (ev.Seq == 1):
		return malformed("a %s event at seq %d: seq 1 is always the created event, and only it", typeName(ev.Type), ev.Seq)
	}
	// target is a seq before the event's own.
	target := func() error {
		if ev.Target < 1 || ev.Target >= ev.Seq {
			return malformed("%s at seq %d has target %d: want 1 to %d", typeName(ev.Type), ev.Seq, ev.Target, ev.Seq-1)
		}
		return nil
	}
	body := func() error {
		switch {
		case len(ev.Body) > MaxBodyLen:
			return malformed("body of %d bytes, the limit is %d", len(ev.Body), MaxBodyLen)
		case len(ev.Body) == 0 || !ValidJSON(ev.Body):
			return malformed("body is not a JSON value")
		}
		return nil
	}
	members := func(creator string) error {
		if len(ev.Members) == 0 {
			return malformed("%s without members", typeName(ev.Type))
		}
		if creator != "" && ev.Members[0] != creator {
			return malformed("the created event's first member %q is not its creator %q", Clip(ev.Members[0]), creator)
		}
		for _, u := range ev.Members {
			if !ValidUserID(u) {
				return malformed("invalid member %q", Clip(u))
			}
		}
		return nil
	}
	if len(ev.Body) > 0 && ev.Type != parleyv1.EventType_EVENT_TYPE_MESSAGE && ev.Type != parleyv1.EventType_EVENT_TYPE_EDIT {
		return malformed("a %s event with a body", typeName(ev.Type))
	}
	switch ev.Type {
	case parleyv1.EventType_EVENT_TYPE_MESSAGE:
		if !ValidKind(ev.Kind) {
			return malformed("invalid message kind %q", Clip(ev.Kind))
		}
		return body()
	case parleyv1.EventType_EVENT_TYPE_EDIT:
		if err := target(); err != nil {
			return err
		}
		return body()
	case parleyv1.EventType_EVENT_TYPE_REVOKE, parleyv1.EventType_EVENT_TYPE_READ:
		return target()
	case parleyv1.EventType_EVENT_TYPE_CREATED:
		if ev.ConvKind != parleyv1.ConvKind_CONV_KIND_DIRECT && ev.ConvKind != parleyv1.ConvKind_CONV_KIND_GROUP {
			return malformed("created event of unknown conversation kind %d", ev.ConvKind)
		}
		if len(ev.Title) > MaxTitleLen {
			return malformed("title of %d bytes, the limit is %d", len(ev.Title), MaxTitleLen)
		}
		return members(ev.From)
	case parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED:
		return members("")
	}
	return malformed("unknown event type %d", ev.Type)
}

// typeName names an event type in an error, known or not.
func typeName(t parleyv1.EventType) string {
	if n := EventTypeName(t); n != "" {
		return n
	}
	return "unknown-type"
}
