package schema

import (
	"encoding/json"
	"strings"
	"testing"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

func TestIDs(t *testing.T) {
	for id, ok := range map[string]bool{
		"alice": true, "a.b-c_9": true, strings.Repeat("x", 64): true,
		"": false, strings.Repeat("x", 65): false, "a b": false, "a/b": false, "é": false,
	} {
		if ValidUserID(id) != ok {
			t.Errorf("ValidUserID(%q) = %v", id, !ok)
		}
	}
	if ValidCMID("a\nb") || !ValidCMID("any printable: /?#") {
		t.Error("ValidCMID")
	}
	d := DirectConvID("alice", "bob")
	if d != DirectConvID("bob", "alice") || !ValidConvID(d) || d == DirectConvID("alice", "bobb") {
		t.Errorf("DirectConvID gives %q", d)
	}
	// The separator keeps pairs apart whose concatenations agree.
	if DirectConvID("ab", "c") == DirectConvID("a", "bc") {
		t.Error("DirectConvID confuses pairs")
	}
}

func TestEveryReasonHasACode(t *testing.T) {
	for v, name := range parleyv1.Reason_name {
		r := parleyv1.Reason(v)
		if r == parleyv1.Reason_REASON_UNSPECIFIED {
			continue
		}
		if ErrorCode(r) == CodeInternal {
			t.Errorf("%s maps to %s", name, CodeInternal)
		}
	}
	for v := range parleyv1.EventType_name {
		if et := parleyv1.EventType(v); et != parleyv1.EventType_EVENT_TYPE_UNSPECIFIED && EventTypeName(et) == "" {
			t.Errorf("%v has no protocol name", et)
		}
	}
}

func TestToJSON(t *testing.T) {
	cases := []struct {
		ev   *parleyv1.Event
		want string
	}{
		{&parleyv1.Event{Conv: "c", Seq: 3, Type: parleyv1.EventType_EVENT_TYPE_REVOKE, MsgId: "m", Cmid: "r1", From: "alice", Target: 2, Ts: 9},
			`{"conv":"c","seq":3,"type":"revoke","msg_id":"m","cmid":"r1","from":"alice","target":2,"ts":9}`},
		{&parleyv1.Event{Conv: "c", Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: "m", From: "alice", ConvKind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{"alice", "bob"}, Ts: 1},
			`{"conv":"c","seq":1,"type":"created","msg_id":"m","from":"alice","kind":"direct","members":["alice","bob"],"ts":1}`},
		{&parleyv1.Event{Conv: "c", Seq: 2, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, Kind: "text", Body: []byte(`{"t":[1,2]}`), Ts: 5},
			`{"conv":"c","seq":2,"type":"message","kind":"text","body":{"t":[1,2]},"ts":5}`},
		{&parleyv1.Event{Conv: "c", Seq: 2, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, Body: []byte(`not json`), Ts: 5},
			`{"conv":"c","seq":2,"type":"message","body":"not json","ts":5}`},
	}
	for _, c := range cases {
		b, err := json.Marshal(ToJSON(c.ev))
		if err != nil || string(b) != c.want {
			t.Errorf("ToJSON(%v) = %s, %v\nwant %s", c.ev, b, err, c.want)
		}
	}
}

func TestCQLMigrations(t *testing.T) {
	ms, err := CQLMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 || len(ms[0].Statements) != 4 {
		t.Fatalf("migrations %+v", ms)
	}
	for _, st := range ms[0].Statements {
		if !strings.HasPrefix(st, "CREATE TABLE IF NOT EXISTS") || strings.Contains(st, "--") || strings.Contains(st, ";") {
			t.Errorf("statement %q", st)
		}
	}
}

func TestSetBody(t *testing.T) {
	c := &parleyv1.Command{}
	if _, err := SetBody(c, &parleyv1.Read{Seq: 3}); err != nil || c.GetRead().GetSeq() != 3 {
		t.Fatalf("SetBody(Read) = %v, %v", c, err)
	}
	if _, err := SetBody(c, &parleyv1.Event{}); err == nil {
		t.Fatal("SetBody accepted an Event")
	}
	if _, err := SetBody(c, nil); err != nil || c.Body != nil {
		t.Fatalf("SetBody(nil) = %v, %v", c, err)
	}
}

func TestPresenceKeys(t *testing.T) {
	for _, c := range []struct {
		key        string
		user, node string
		ok         bool
	}{
		{PresenceNodeKey("n-1"), "", "n-1", true},
		{PresenceUserKey("alice", "n-1"), "alice", "n-1", true},
		{"n/", "", "", false},
		{"u/alice", "", "", false},
		{"u/alice/", "", "", false},
		{"u/alice/n/1", "", "", false},
		{"x/alice", "", "", false},
	} {
		user, node, ok := ParsePresenceKey(c.key)
		if ok != c.ok || (ok && (user != c.user || node != c.node)) {
			t.Errorf("ParsePresenceKey(%q) = %q, %q, %v; want %q, %q, %v", c.key, user, node, ok, c.user, c.node, c.ok)
		}
	}
}
