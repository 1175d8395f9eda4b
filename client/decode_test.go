package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// historyPageFrame is a history_ok frame of n message events as the server
// writes it.
func historyPageFrame(n int) []byte {
	b := []byte(`{"op":"history_ok","id":"h1","conv":"c-1234567890","events":[`)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = schema.AppendEventJSON(b, &parleyv1.Event{
			Conv: "c-1234567890", Seq: int64(i + 1), Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
			MsgId: "2Ok9q3bT1Sx2mB6xG4n0Yk8hW7e", Cmid: fmt.Sprintf("cmid-%d", i), From: "user-42", Kind: "text",
			Body: []byte(`"hello, this is message number 1234 of the page"`), Ts: 1795270817000 + int64(i),
		})
	}
	return append(b, `],"more":true}`...)
}

// frameDecoders are the client's decoder and encoding/json, which it
// replaced; the decode benchmarks run both.
var frameDecoders = []struct {
	name   string
	decode func([]byte, *frame) error
}{
	{"decodeFrame", decodeFrame},
	{"encoding_json", func(b []byte, f *frame) error { return json.Unmarshal(b, f) }},
}

// BenchmarkDecodeHistoryPage: decoding a 1000-event history_ok frame, as
// the read loop does for every page of a catch-up.
func BenchmarkDecodeHistoryPage(b *testing.B) {
	page := historyPageFrame(1000)
	for _, d := range frameDecoders {
		b.Run(d.name, func(b *testing.B) {
			b.SetBytes(int64(len(page)))
			b.ReportAllocs()
			for b.Loop() {
				var f frame
				if err := d.decode(page, &f); err != nil || len(f.Events) != 1000 {
					b.Fatal(err, len(f.Events))
				}
			}
		})
	}
}

// BenchmarkDecodeEventPush: decoding one pushed event frame.
func BenchmarkDecodeEventPush(b *testing.B) {
	ev := schema.AppendEventFields([]byte(`{"op":"event",`), &parleyv1.Event{
		Conv: "c-1234567890", Seq: 17, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
		MsgId: "2Ok9q3bT1Sx2mB6xG4n0Yk8hW7e", Cmid: "cmid-17", From: "user-42", Kind: "text",
		Body: []byte(`"hello"`), Ts: 1795270817000,
	})
	ev = append(ev, '}')
	for _, d := range frameDecoders {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var f frame
				if err := d.decode(ev, &f); err != nil || f.Seq != 17 {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzDecodeFrame: decodeFrame gives the frame encoding/json gives, for
// whatever encoding/json accepts, and the frame keeps nothing of its input
// (the read loop reuses its buffer).
func FuzzDecodeFrame(f *testing.F) {
	f.Add(historyPageFrame(3))
	f.Add([]byte(`{"op":"event","conv":"c1","seq":5,"type":"message","msg_id":"m","cmid":"x","from":"a","kind":"text","body":{"a":[1,2,{"b":null}]},"ts":7}`))
	f.Add([]byte(`{"op":"auth_ok","id":"auth","user":"alice","device":"d1","node":"n1","limits":{"rate":20,"burst":40}}`))
	f.Add([]byte(`{"op":"sync_ok","id":"s","convs":[{"conv":"c1","kind":"group","title":"T\u00e9","last_seq":9,"read_seq":3,"unread":2}]}`))
	f.Add([]byte(`{"op":"error","id":"7","code":"rate_limited","message":"slow down"}`))
	f.Add([]byte(`{"op":"event","conv":"c1","seq":2,"type":"member_added","members":["a","b"],"body":"\ud83d\ude00 \u0000","ts":1}`))
	f.Add([]byte(`{"op":"ack","id":"3","conv":"c","cmid":"k","msg_id":"m","seq":1e2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want frame
		if json.Unmarshal(data, &want) != nil {
			return
		}
		var got frame
		in := bytes.Clone(data) // the fuzz input itself must not change
		if err := decodeFrame(in, &got); err != nil {
			t.Fatalf("encoding/json decodes %q, decodeFrame fails: %v", data, err)
		}
		w, _ := json.Marshal(want)
		g, _ := json.Marshal(got)
		if string(w) != string(g) {
			t.Fatalf("decoded %q:\nencoding/json %s\ndecodeFrame   %s", data, w, g)
		}
		for i := range in {
			in[i] = 'x'
		}
		if after, _ := json.Marshal(got); string(after) != string(g) {
			t.Fatalf("decoded %q, then overwrote the input: the frame changed from\n%s\nto\n%s", data, g, after)
		}
	})
}
