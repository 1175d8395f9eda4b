package schema

import (
	"bytes"
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Benchmarks of what every consumer of the events topic does per record:
// decode and check it (DecodeSharedEvent: writer, fanout; DecodeEvent:
// tap) and render it as the protocol's JSON (ToJSON, then encoding/json:
// the connector's push and history frames, the HTTP API, the tap); and of
// the decoding of the other hot records (DecodeSharedCommand: the
// sequencer, against DecodeCommand; DecodeOutcomeBatch: the connectors).
// Run with go test -run '^$' -bench . -benchmem ./schema.

// benchBody is a chat message body of about 100 bytes.
var benchBody = []byte(`{"text":"Are we still on for the design review at 3pm? I moved it to room 4B.","mentions":["bob"]}`)

// benchMessage is a message event as the sequencer writes it.
func benchMessage() *parleyv1.Event {
	return &parleyv1.Event{
		Conv: "2lKGCVZf5PqQ8bW0ZKUVTXh5Qx3", Seq: 48_213, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
		MsgId: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", Cmid: "5f0c6f43-3e4b-4a43-9a1e-0d7c1b2a9e11",
		From: "user-000417", Ts: 1_760_000_000_123, Kind: "text", Body: benchBody,
	}
}

// BenchmarkDecodeEvent decodes and checks a message as a record of the
// events topic: "copy" with DecodeEvent (tap's), "shared" with
// DecodeSharedEvent (the writer's and fanout's), whose strings and body
// share the record's memory.
func BenchmarkDecodeEvent(b *testing.B) {
	want := benchMessage()
	value, err := proto.Marshal(want)
	if err != nil {
		b.Fatal(err)
	}
	key := []byte(want.Conv)
	benchDecoders(b, value, want, []decoder[*parleyv1.Event]{
		{"copy", func() (*parleyv1.Event, error) { return DecodeEvent(key, value) }},
		{"shared", func() (*parleyv1.Event, error) { return DecodeSharedEvent(key, value) }},
	})
}

// BenchmarkDecodeCommand decodes a send as a record of the commands topic:
// "copy" with DecodeCommand, "shared" with DecodeSharedCommand (the
// sequencer's), whose strings and body share the record's memory.
func BenchmarkDecodeCommand(b *testing.B) {
	ev := benchMessage()
	want := &parleyv1.Command{Conv: ev.Conv, MsgId: ev.MsgId, Cmid: ev.Cmid, From: ev.From, Ts: ev.Ts,
		ReplyTo: &parleyv1.ReplyTo{Node: "conn-1", Partition: 3},
		Body:    &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: ev.Kind, Body: ev.Body}}}
	value, err := proto.Marshal(want)
	if err != nil {
		b.Fatal(err)
	}
	benchDecoders(b, value, want, []decoder[*parleyv1.Command]{
		{"copy", func() (*parleyv1.Command, error) { return DecodeCommand(value) }},
		{"shared", func() (*parleyv1.Command, error) {
			cmd := new(parleyv1.Command)
			return cmd, DecodeSharedCommand(value, cmd)
		}},
	})
}

// decoder is a named way to decode a benchmark's record.
type decoder[M proto.Message] struct {
	name   string
	decode func() (M, error)
}

// benchDecoders runs each decoder of value as a sub-benchmark, and checks
// that what it decoded last equals want.
func benchDecoders[M proto.Message](b *testing.B, value []byte, want M, decoders []decoder[M]) {
	for _, d := range decoders {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(value)))
			var got M
			var err error
			for b.Loop() {
				if got, err = d.decode(); err != nil {
					b.Fatal(err)
				}
			}
			if !proto.Equal(got, want) {
				b.Fatalf("decoded %v, want %v", got, want)
			}
		})
	}
}

// BenchmarkDecodeOutcomeBatch decodes a batch of 100 outcomes of sent
// messages, as a connector's commander reads each record of its outcomes
// partition (DecodeOutcomeBatch, sharing the record's memory); "copy" is
// UnmarshalVT, which copies every string, and "proto" the reflective
// decoder.
func BenchmarkDecodeOutcomeBatch(b *testing.B) {
	batch := &parleyv1.OutcomeBatch{Node: "conn-1"}
	for range 100 {
		ev := benchMessage()
		ev.Body = nil // outcomes carry identifiers only
		batch.Outcomes = append(batch.Outcomes, &parleyv1.Outcome{MsgId: ev.MsgId, Conv: ev.Conv,
			Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED, Event: ev})
	}
	value, err := proto.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	benchDecoders(b, value, batch, []decoder[*parleyv1.OutcomeBatch]{
		{"DecodeOutcomeBatch", func() (*parleyv1.OutcomeBatch, error) { return DecodeOutcomeBatch(value) }},
		{"copy", func() (*parleyv1.OutcomeBatch, error) {
			got := new(parleyv1.OutcomeBatch)
			return got, unmarshal(value, got, plainOutcomeBatch)
		}},
		{"proto", func() (*parleyv1.OutcomeBatch, error) {
			got := new(parleyv1.OutcomeBatch)
			return got, proto.Unmarshal(value, got)
		}},
	})
}

// BenchmarkEventJSON renders a message event as the connector does for a
// push frame's event fields: ToJSON, then json.Marshal.
func BenchmarkEventJSON(b *testing.B) {
	ev := benchMessage()
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		var err error
		if out, err = json.Marshal(ToJSON(ev)); err != nil {
			b.Fatal(err)
		}
	}
	checkRendered(b, out, ev)
}

// BenchmarkAppendEventJSON renders the same event as history pages and
// pushes do: AppendEventJSON into a reused buffer.
func BenchmarkAppendEventJSON(b *testing.B) {
	ev := benchMessage()
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		out = AppendEventJSON(out[:0], ev)
	}
	checkRendered(b, out, ev)
}

// checkRendered fails b unless out is ev's protocol JSON, and counts its
// bytes.
func checkRendered(b *testing.B, out []byte, ev *parleyv1.Event) {
	b.SetBytes(int64(len(out)))
	var back EventJSON
	if err := json.Unmarshal(out, &back); err != nil {
		b.Fatal(err)
	}
	if back.Seq != ev.Seq || back.Type != "message" || back.MsgID != ev.MsgId || !bytes.Equal(back.Body, ev.Body) {
		b.Fatalf("rendered %s", out)
	}
}

// BenchmarkValidJSON checks a message body of about 100 bytes, as the
// sequencer does for every send and edit and the writer and fanout for every
// event: ValidJSON, and encoding/json.Valid that it matches.
func BenchmarkValidJSON(b *testing.B) {
	for _, c := range []struct {
		name  string
		valid func([]byte) bool
	}{{"ValidJSON", ValidJSON}, {"encoding-json", json.Valid}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !c.valid(benchBody) {
					b.Fatal("the body is valid")
				}
			}
		})
	}
}
