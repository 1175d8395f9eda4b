package schema

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// FuzzDecodeEvent feeds records of the events topic to DecodeEvent, the
// decoder of tap, and to DecodeSharedEvent, that of the writer, rebuild and
// fanout. It checks that nothing panics, on whole or cut records; that the
// two decide the same and decode the same event; that a refusal says why
// in a bounded message and wraps ErrUndecodable exactly when the value is
// not an Event (ErrMalformed otherwise); and that an accepted event is
// keyed by its conversation, passes CheckEvent, re-encodes to an equal
// event that is accepted again, and renders as valid client JSON of
// bounded size. Run with scripts/fuzz, or
// go test -run '^$' -fuzz '^FuzzDecodeEvent$' ./schema.
func FuzzDecodeEvent(f *testing.F) {
	const g = "3MPbDgfPSpdk4yX6HH4DZAM2c1v"
	base := parleyv1.Event{Conv: g, MsgId: "3MPbDjvx7TfbHFOBPjUFJsyYs50", From: "alice", Ts: 1_700_000_000_000}
	ev := func(seq int64, typ parleyv1.EventType, set func(*parleyv1.Event)) *parleyv1.Event {
		e := proto.Clone(&base).(*parleyv1.Event)
		e.Seq, e.Type = seq, typ
		if set != nil {
			set(e)
		}
		return e
	}
	seeds := []*parleyv1.Event{
		ev(1, parleyv1.EventType_EVENT_TYPE_CREATED, func(e *parleyv1.Event) {
			e.ConvKind, e.Members, e.Title = parleyv1.ConvKind_CONV_KIND_GROUP, []string{"alice", "bob"}, "team"
		}),
		ev(2, parleyv1.EventType_EVENT_TYPE_MESSAGE, func(e *parleyv1.Event) { e.Kind, e.Body, e.Cmid = "text", []byte(`{"text":"hi"}`), "c1" }),
		ev(3, parleyv1.EventType_EVENT_TYPE_EDIT, func(e *parleyv1.Event) { e.Target, e.Body, e.Cmid = 2, []byte(`"edited"`), "c2" }),
		ev(4, parleyv1.EventType_EVENT_TYPE_REVOKE, func(e *parleyv1.Event) { e.Target, e.Cmid = 2, "c3" }),
		ev(5, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, func(e *parleyv1.Event) { e.Members = []string{"carol"} }),
		ev(6, parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED, func(e *parleyv1.Event) { e.Members = []string{"bob"} }),
		ev(7, parleyv1.EventType_EVENT_TYPE_READ, func(e *parleyv1.Event) { e.Target = 6 }),
		// Well-formed in bytes, not in meaning.
		ev(0, parleyv1.EventType_EVENT_TYPE_MESSAGE, func(e *parleyv1.Event) { e.Kind, e.Body = "text", []byte(`1`) }),
		ev(9, parleyv1.EventType_EVENT_TYPE_CREATED, nil),
		ev(9, 42, nil),
		ev(9, parleyv1.EventType_EVENT_TYPE_READ, func(e *parleyv1.Event) { e.Target = 9 }),
		ev(9, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, func(e *parleyv1.Event) { e.Members = []string{"a\x00b"} }),
		ev(9, parleyv1.EventType_EVENT_TYPE_MESSAGE, func(e *parleyv1.Event) { e.Kind, e.Body = "text", []byte(strings.Repeat("x", MaxBodyLen+1)) }),
		ev(1<<62, parleyv1.EventType_EVENT_TYPE_MESSAGE, func(e *parleyv1.Event) { e.Kind, e.Body, e.Conv = "text", []byte(`1`), "bad/conv" }),
	}
	for _, e := range seeds {
		v, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(e.Conv), v)
		f.Add([]byte("another-conv"), v)
	}
	f.Add([]byte(g), []byte("\xff\xff\xff"))
	f.Add([]byte(g), []byte(nil))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		ev, err := DecodeEvent(key, value)
		shared, serr := DecodeSharedEvent(key, value)
		if (err == nil) != (serr == nil) || err == nil && !proto.Equal(ev, shared) || err != nil && SkipReason(err) != SkipReason(serr) {
			t.Fatalf("DecodeEvent: %v, %v; DecodeSharedEvent: %v, %v", ev, err, shared, serr)
		}
		if err != nil {
			// Refused as undecodable only what proto.Unmarshal refuses, and
			// anything it takes is an event or malformed (wire.go: a record
			// proto.Unmarshal refuses may still be read as malformed).
			undecodable := proto.Unmarshal(value, new(parleyv1.Event)) != nil
			if errors.Is(err, ErrUndecodable) && !undecodable || !errors.Is(err, ErrUndecodable) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %q for a value that decodes: %v", err, !undecodable)
			}
			if n := len(err.Error()); n > 1024 {
				t.Fatalf("error of %d bytes", n)
			}
			if SkipReason(err) == "" {
				t.Fatal("no reason")
			}
		} else {
			if ev.Conv != string(key) || CheckEvent(ev) != nil {
				t.Fatalf("accepted %v under key %q", ev, key)
			}
			v, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeEvent(key, v)
			if err != nil || !proto.Equal(again, ev) {
				t.Fatalf("re-encoded event decodes as %v, %v", again, err)
			}
			j, err := json.Marshal(ToJSON(ev))
			if err != nil || !json.Valid(j) {
				t.Fatalf("client JSON %q: %v", j, err)
			}
			if len(j) > 6*len(value)+512 {
				t.Fatalf("client JSON of %d bytes from a record of %d", len(j), len(value))
			}
		}
		if len(value) > 1 {
			_, _ = DecodeEvent(key, value[:len(value)/2])
			_, _ = DecodeEvent(key, value[:len(value)-1])
		}
	})
}
