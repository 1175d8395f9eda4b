package schema

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// sameJSON fails unless got is valid JSON meaning what json.Marshal of
// the event's ToJSON form means, and, when exact, is byte for byte that.
func sameJSON(t *testing.T, ev *parleyv1.Event, exact bool) {
	t.Helper()
	got := AppendEventJSON([]byte("prefix"), ev)
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatalf("AppendEventJSON dropped what dst held: %s", got)
	}
	got = got[len("prefix"):]
	want, err := json.Marshal(ToJSON(ev))
	if err != nil {
		t.Fatal(err)
	}
	if exact && !bytes.Equal(got, want) {
		t.Fatalf("AppendEventJSON\n got %s\nwant %s", got, want)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("AppendEventJSON wrote invalid JSON %q: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("AppendEventJSON means %v, json.Marshal %v", g, w)
	}
}

func TestAppendEventJSON(t *testing.T) {
	for name, tc := range map[string]struct {
		ev    *parleyv1.Event
		exact bool
	}{
		"message": {benchMessage(), true},
		"created": {&parleyv1.Event{Conv: "c1", Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: "m", From: "alice",
			ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "the team", Members: []string{"alice", "bob", "carol"}, Ts: 5}, true},
		"members and target": {&parleyv1.Event{Conv: "c1", Seq: 9, Type: parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, From: "alice",
			Members: []string{"dave"}, Target: 3, Ts: 6}, true},
		"no body, zero ts": {&parleyv1.Event{Conv: "c", Seq: 2, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE}, true},
		"strings to escape": {&parleyv1.Event{Conv: "c", Seq: 3, Type: parleyv1.EventType_EVENT_TYPE_CREATED,
			ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "<b>\"quotes\" & \\ \n\t\x01 é 😀 \u2028 \xff", From: "a&b",
			Members: []string{"<x>", "plain"}}, true},
		"body not JSON": {&parleyv1.Event{Conv: "c", Seq: 4, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, Body: []byte("not json <&>")}, true},
		"body with spaces and <&>": {&parleyv1.Event{Conv: "c", Seq: 5, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, Kind: "text",
			Body: []byte(`{ "text" : "a <b> & c", "n": [1, 2] }`)}, false},
	} {
		t.Run(name, func(t *testing.T) { sameJSON(t, tc.ev, tc.exact) })
	}
}

// FuzzAppendEventJSON: whatever the strings and body, AppendEventJSON
// writes valid JSON meaning what json.Marshal writes.
func FuzzAppendEventJSON(f *testing.F) {
	m := benchMessage()
	f.Add(m.Conv, m.From, m.Cmid, "", m.Body, m.Seq, m.Ts)
	f.Add("c", "a&b", "<x>", "title \n é", []byte(`{ "t" : 1 }`), int64(1), int64(0))
	f.Add("c", "\xff\xfe", "\u2028", "\x00", []byte("not json"), int64(-1), int64(-5))
	f.Fuzz(func(t *testing.T, conv, from, cmid, title string, body []byte, seq, ts int64) {
		ev := &parleyv1.Event{Conv: conv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_CREATED, From: from, Cmid: cmid,
			Title: title, Body: body, Ts: ts, Members: []string{from, title}}
		sameJSON(t, ev, false)
	})
}
