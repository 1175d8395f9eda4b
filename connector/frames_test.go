package connector

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
)

// checkAck fails t unless appendAck writes what json.Marshal writes for the
// same reply.
func checkAck(t *testing.T, id, conv, cmid, msgID string, seq int64) {
	t.Helper()
	want, err := json.Marshal(reply{Op: "ack", ID: id, Conv: conv, CMID: cmid, MsgID: msgID, Seq: seq})
	if err != nil {
		t.Fatal(err)
	}
	if got := appendAck([]byte("kept"), id, conv, cmid, msgID, seq); string(got) != "kept"+string(want) {
		t.Fatalf("appendAck(%q, %q, %q, %q, %d) = %s, want kept%s", id, conv, cmid, msgID, seq, got, want)
	}
}

// TestAppendAck: the ack is the bytes json.Marshal writes for the reply,
// whatever the strings hold (escapes, HTML characters, non-ASCII, invalid
// UTF-8) and with empty fields left out.
func TestAppendAck(t *testing.T) {
	checkAck(t, "r1", "2lKGCVZf5PqQ8bW0ZKUVTXh5Qx3", "5f0c6f43-3e4b", "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", 48_213)
	checkAck(t, "", "d:alice:bob", "", "m", 1)
	checkAck(t, "", "", "", "", 0)
	checkAck(t, `quote " and \ backslash`, "<conv>&", "tab\there\nnewline", "é ☃ 😀", -1)
	checkAck(t, "\xff\xfe invalid", "\u2028\u2029", "\x00\x1f\x7f", "ok", math.MaxInt64)
	checkAck(t, "x", "y", "z", "w", math.MinInt64)
}

// FuzzAppendAck holds appendAck to json.Marshal on any strings and seq.
func FuzzAppendAck(f *testing.F) {
	f.Add("r1", "2lKGCVZf5PqQ8bW0ZKUVTXh5Qx3", "c1", "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", int64(7))
	f.Add("", "<&>", "\xff", "\u2028", int64(0))
	f.Fuzz(func(t *testing.T, id, conv, cmid, msgID string, seq int64) {
		checkAck(t, id, conv, cmid, msgID, seq)
	})
}

// checkFlat fails t unless parseFlat takes frame and decodes it as
// json.Unmarshal does (when take), or leaves it (when not).
func checkFlat(t *testing.T, frame string, take bool) {
	t.Helper()
	var flat request
	if got := parseFlat([]byte(frame), &flat); got != take {
		t.Fatalf("parseFlat(%s) = %v, want %v", frame, got, take)
	}
	if take {
		var full request
		if err := jsonv2.Unmarshal([]byte(frame), &full); err != nil || !reflect.DeepEqual(flat, full) {
			t.Fatalf("%s: parseFlat read %+v; json.Unmarshal %+v, %v", frame, flat, full, err)
		}
	}
}

// TestParseFlat: the simple frames are read as json.Unmarshal reads them;
// anything else is left to it.
func TestParseFlat(t *testing.T) {
	for _, frame := range []string{
		`{"op":"send","id":"r1","conv":"` + fuzzGroup + `","cmid":"c1","kind":"text","body":{"text":"hi"}}`,
		`{"body":"x","cmid":"c1","conv":"c","op":"send"}`, // any order
		` { "op" : "read" , "conv" : "c" , "seq" : 7 } ` + "\n",
		`{"op":"edit","target":-0,"seq":123456789012345678,"limit":0,"body":[1,{"a":[]},"é \u00e9 \\"]}`,
		`{"op":"send","body":null}`, `{"op":"send","body":true}`, `{"op":"send","body":-1.5e3}`, `{"op":"send","body":""}`,
		`{"op":"send","body":"}"}`, `{"op":"send","body":{"a":"]"}}`,
		`{"op":"ping","id":"","token":"t","device":"d","title":"t"}`, `{}`,
	} {
		checkFlat(t, frame, true)
	}
	for _, frame := range []string{
		`{"op":"send","op":"send"}`,                         // repeated: the decoder refuses it
		`{"op":"send","Op":"x"}`, `{"op":"send","other":1}`, // unknown names: the decoder skips them
		`{"op":"se\u006ed"}`, `{"o\u0070":"send"}`, `{"op":"é"}`, // escapes, non-ASCII
		`{"op":null}`, `{"op":1}`, `{"seq":"1"}`, `{"seq":1.0}`, `{"seq":1e3}`, `{"seq":01}`, `{"seq":1234567890123456789}`,
		`{"op":"send","body":{"a":1,"a":2}}`, `{"op":"send","body":"\ud800"}`, `{"op":"send","body":"` + "\xff" + `"}`,
		`{"op":"send","body":}`, `{"op":"send","body":tru}`, `{"op":"send","body":[1,]}`, `{"op":"send","body":{"a":1}`,
		`{"op":"members","add":["bob"]}`, `{"op":"history","after":1}`,
		`{"op":"send"} x`, `{"op":"send",}`, `{"op" "send"}`, `[]`, `"op"`, ``, `{`,
	} {
		checkFlat(t, frame, false)
	}
}
