package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	gojson "github.com/goccy/go-json"

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

// frameDecoders are the client's decoder, its general decoder alone, and
// encoding/json, which it replaced; the decode benchmarks run each.
var frameDecoders = []struct {
	name   string
	decode func([]byte, *frame) error
}{
	{"decodeFrame", decodeFrame},
	{"goccy", func(b []byte, f *frame) error { return gojson.Unmarshal(b, f) }},
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
	f.Add(pushFrame(&parleyv1.Event{Conv: "c1", Seq: 9, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", Cmid: "k", From: "a", Kind: "text", Body: []byte(`{"t":1,"text":"x"}`), Ts: 3}))
	f.Add([]byte(`{"op":"event","conv":"c","seq":1,"type":"message","body":[1,{"ts":2}],"ts":-12}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want frame
		if json.Unmarshal(data, &want) != nil {
			var pushed frame
			if decodePush(bytes.Clone(data), &pushed) {
				t.Fatalf("encoding/json refuses %q, decodePush takes it", data)
			}
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

// pushFrame is an event push as the server writes it.
func pushFrame(ev *parleyv1.Event) []byte {
	return append(schema.AppendEventFields([]byte(`{"op":"event",`), ev), '}')
}

// messagePush is the push of a typical message, changed by mod if not nil.
func messagePush(mod func(*parleyv1.Event)) []byte {
	ev := &parleyv1.Event{
		Conv: "c-1234567890", Seq: 17, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
		MsgId: "2Ok9q3bT1Sx2mB6xG4n0Yk8hW7e", Cmid: "cmid-17", From: "user-42", Kind: "text",
		Body: []byte(`{"t":1795270817000123456,"text":"x"}`), Ts: 1795270817000,
	}
	if mod != nil {
		mod(ev)
	}
	return pushFrame(ev)
}

// decodePush takes the pushes the server writes for messages, sets what
// encoding/json sets, and leaves every other frame to the general decoder,
// which decodeFrame then uses.
func TestDecodePush(t *testing.T) {
	msg := messagePush
	fast := map[string][]byte{
		"message":         msg(nil),
		"string body":     msg(func(ev *parleyv1.Event) { ev.Body = []byte(`"a \"quoted\" \u00e9 ,\"ts\":1}"`) }),
		"body like a end": msg(func(ev *parleyv1.Event) { ev.Body = []byte(`[1,{"ts":2},"x"]`) }),
		"no body":         msg(func(ev *parleyv1.Event) { ev.Body = nil }),
		"title":           msg(func(ev *parleyv1.Event) { ev.Title = "Team <&> room" }),
		"only required":   msg(func(ev *parleyv1.Event) { ev.MsgId, ev.Cmid, ev.From, ev.Kind, ev.Body = "", "", "", "", nil }),
		"created":         msg(func(ev *parleyv1.Event) { ev.Type = parleyv1.EventType_EVENT_TYPE_CREATED; ev.Kind = "group" }),
		"unknown type":    []byte(`{"op":"event","conv":"c","seq":1,"type":"poll","from":"a","ts":5}`),
		"negative":        []byte(`{"op":"event","conv":"c","seq":-3,"type":"message","ts":-0}`),
		"18 digits":       []byte(`{"op":"event","conv":"c","seq":999999999999999999,"type":"message","ts":0}`),
		"empty strings":   []byte(`{"op":"event","conv":"","seq":1,"type":"","msg_id":"","ts":1}`),
	}
	slow := map[string][]byte{
		"edit (target)": msg(func(ev *parleyv1.Event) { ev.Type, ev.Target = parleyv1.EventType_EVENT_TYPE_EDIT, 3 }),
		"members": msg(func(ev *parleyv1.Event) {
			ev.Type, ev.Members = parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, []string{"a", "b"}
		}),
		"escaped id":        msg(func(ev *parleyv1.Event) { ev.From = "us\"er" }),
		"non-ASCII id":      msg(func(ev *parleyv1.Event) { ev.Conv = "c-é" }),
		"19 digits":         []byte(`{"op":"event","conv":"c","seq":1,"type":"message","ts":1795270817000123456}`),
		"leading zero":      []byte(`{"op":"event","conv":"c","seq":07,"type":"message","ts":1}`),
		"fraction":          []byte(`{"op":"event","conv":"c","seq":1.5,"type":"message","ts":1}`),
		"spaces":            []byte(`{"op":"event", "conv":"c","seq":1,"type":"message","ts":1}`),
		"body spaces":       []byte(`{"op":"event","conv":"c","seq":1,"type":"message","body": {"a":1} ,"ts":1}`),
		"invalid body":      []byte(`{"op":"event","conv":"c","seq":1,"type":"message","body":{"a":1,},"ts":1}`),
		"two values":        []byte(`{"op":"event","conv":"c","seq":1,"type":"message","body":1,"ts":2,"ts":3}`),
		"order":             []byte(`{"op":"event","conv":"c","seq":1,"type":"message","from":"a","cmid":"k","ts":1}`),
		"unknown key":       []byte(`{"op":"event","conv":"c","seq":1,"type":"message","extra":1,"ts":1}`),
		"other op":          []byte(`{"op":"ack","id":"3","conv":"c","cmid":"k","msg_id":"m","seq":1}`),
		"trailing":          []byte(`{"op":"event","conv":"c","seq":1,"type":"message","ts":1} `),
		"ts not last":       []byte(`{"op":"event","conv":"c","seq":1,"type":"message","ts":1,"kind":"text"}`),
		"duplicate message": []byte(`{"op":"event","conv":"c","seq":1,"type":"message","msg_id":"a","msg_id":"b","ts":1}`),
	}
	check := func(name string, data []byte, wantFast bool) {
		t.Helper()
		var want frame
		wantErr := json.Unmarshal(data, &want)
		var got frame
		if took := decodePush(data, &got); took != wantFast {
			t.Fatalf("%s: decodePush(%s) = %v, want %v", name, data, took, wantFast)
		} else if !took && !reflect.DeepEqual(got, frame{}) {
			t.Fatalf("%s: decodePush refused %s but changed the frame: %+v", name, data, got)
		}
		got = frame{}
		err := decodeFrame(data, &got)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%s: decodeFrame(%s) error %v, encoding/json %v", name, data, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: decodeFrame(%s):\n got %+v\nwant %+v", name, data, got, want)
		}
	}
	for name, data := range fast {
		check(name, data, true)
	}
	for name, data := range slow {
		check(name, data, false)
	}
}
