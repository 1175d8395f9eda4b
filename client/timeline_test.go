package client

import (
	"encoding/json"
	"testing"
)

func TestTimeline(t *testing.T) {
	var tl Timeline
	for _, ev := range []Event{
		{Conv: "c", Seq: 1, Type: "created"},
		{Conv: "c", Seq: 2, Type: "message", From: "alice", Kind: "text", Body: json.RawMessage(`"hi"`)},
		{Conv: "c", Seq: 3, Type: "message", From: "bob", Kind: "text", Body: json.RawMessage(`"yo"`)},
		{Conv: "c", Seq: 4, Type: "edit", From: "alice", Target: 2, Body: json.RawMessage(`"hello"`)},
		{Conv: "c", Seq: 5, Type: "revoke", From: "bob", Target: 3},
		{Conv: "c", Seq: 6, Type: "edit", From: "bob", Target: 3, Body: json.RawMessage(`"too late"`)},
		{Conv: "c", Seq: 7, Type: "read", From: "bob", Target: 6},
		{Conv: "c", Seq: 2, Type: "message", From: "alice", Body: json.RawMessage(`"replayed"`)}, // ignored
		{Conv: "other", Seq: 8, Type: "message", Body: json.RawMessage(`"elsewhere"`)},           // ignored
	} {
		tl.Apply(ev)
	}
	if tl.LastSeq != 7 || len(tl.Messages) != 2 || tl.ReadBy["bob"] != 6 {
		t.Fatalf("last seq %d, %d messages", tl.LastSeq, len(tl.Messages))
	}
	if m := tl.Message(2); string(m.Body) != `"hello"` || m.Edited != 4 || m.Revoked != 0 {
		t.Fatalf("edited message %+v", m)
	}
	if m := tl.Message(3); m.Body != nil || m.Revoked != 5 || m.Edited != 0 {
		t.Fatalf("revoked message %+v", m)
	}
}
