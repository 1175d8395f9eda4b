package fanout

import (
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestNotification: the record built around the event's stored encoding
// decodes as the Notification of that user and event, and is what
// proto.Marshal writes.
func TestNotification(t *testing.T) {
	for _, ev := range []*parleyv1.Event{
		benchMessage(7),
		{Conv: "c", Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE},
		{Conv: "c", Seq: 2, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, Body: make([]byte, 300)},
	} {
		value, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		for _, user := range []string{"bob", "", string(make([]byte, 200))} {
			got := notification(user, value)
			var n parleyv1.Notification
			if err := proto.Unmarshal(got, &n); err != nil {
				t.Fatalf("%q: %v", user, err)
			}
			want := &parleyv1.Notification{User: user, Event: ev}
			if !proto.Equal(&n, want) {
				t.Fatalf("decoded %v, want %v", &n, want)
			}
			if b, _ := proto.Marshal(want); string(b) != string(got) {
				t.Fatalf("%q: the record differs from proto.Marshal's", user)
			}
		}
	}
}
