package connector

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestPushFramesOwnTheirBytes: a push batch is decoded in place (its
// strings and bodies share the request body, which the HTTP server reuses
// for its next request), so the frames the writers send later must be
// copies: overwriting the body after pushFrames leaves them as they were.
func TestPushFramesOwnTheirBytes(t *testing.T) {
	batch := &parleyv1.PushBatch{From: "fanout-1", Pushes: []*parleyv1.Push{
		{Users: []string{"alice", "bob"}, Event: &parleyv1.Event{Conv: "c1", Seq: 7, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
			MsgId: "m7", Cmid: "k7", From: "carol", Kind: "text", Body: []byte(`{"text":"hi"}`), Ts: 1}},
		{Users: []string{"bob"}, Typing: &parleyv1.Typing{Conv: "c1", From: "carol", Ts: 2}},
	}}
	body, err := proto.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := pushFrames(body)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]string, len(frames))
	for i, f := range frames {
		want[i] = string(f.frame)
	}
	if len(want) != 2 || !strings.Contains(want[0], `"msg_id":"m7"`) || !strings.Contains(want[0], `"body":{"text":"hi"}`) || !strings.Contains(want[1], `"from":"carol"`) {
		t.Fatalf("frames %q", want)
	}
	for i := range body {
		body[i] = 'x'
	}
	for i, f := range frames {
		if string(f.frame) != want[i] {
			t.Fatalf("frame %d changed with the body: %q, was %q", i, f.frame, want[i])
		}
	}
}
