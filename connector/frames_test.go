package connector

import (
	"encoding/json"
	"math"
	"testing"
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
