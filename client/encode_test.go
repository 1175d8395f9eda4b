package client

import (
	"encoding/json"
	"testing"
)

// TestEncodeRequest: encodeRequest writes what encoding/json writes, for
// every field, set or not, and for strings json.Marshal escapes.
func TestEncodeRequest(t *testing.T) {
	zero, seven := int64(0), int64(7)
	body, err := encodeBody(map[string]any{"text": "<b>&</b> \u2028 é", "n": 1.5, "list": []int{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []request{
		{Op: "ping"},
		{Op: "auth", ID: "auth", Token: "eyJ.x.y", Device: "phone-1"},
		{Op: "send", ID: "12", Conv: "c-1", CMID: "m-1", Kind: "text", Body: body},
		{Op: "edit", ID: "13", Conv: "c-1", CMID: "m-2", Target: 17, Body: json.RawMessage(`"plain"`)},
		{Op: "read", ID: "14", Conv: "c-1", Seq: -3},
		{Op: "create", ID: "15", Members: []string{"bob", "carol"}, Title: "Team \"A\" <&>"},
		{Op: "members", ID: "16", Conv: "g", Add: []string{"dave"}, Remove: []string{"eve", "fay"}},
		{Op: "history", ID: "17", Conv: "g", After: &zero, Limit: 50},
		{Op: "history", ID: "18", Conv: "g", Before: &seven, Limit: -1},
		{Op: "tab\there", ID: "\x00\x1f\x7f", Conv: "ünï", CMID: "\xed\xa0\x80", Kind: "\u2029"},
		{Op: "create", Members: []string{}, Add: []string{""}},
	} {
		sameAsEncodingJSON(t, &req)
	}
}

// sameAsEncodingJSON fails t unless encodeRequest writes what json.Marshal
// writes for req.
func sameAsEncodingJSON(t *testing.T, req *request) {
	t.Helper()
	want, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeRequest(req); string(got) != string(want) {
		t.Fatalf("encodeRequest(%+v):\n got %s\nwant %s", *req, got, want)
	}
}

// FuzzEncodeRequest: encodeRequest agrees with encoding/json on any
// strings and numbers.
func FuzzEncodeRequest(f *testing.F) {
	f.Add("send", "c-1", "m-1", "text", "bob", int64(3), int64(0), 0, true)
	f.Add("create", "<&>", "\u2028", "é\x00", "\xff", int64(-1), int64(1<<62), -5, false)
	f.Fuzz(func(t *testing.T, op, conv, cmid, kind, member string, target, seq int64, limit int, after bool) {
		req := request{Op: op, ID: "1", Conv: conv, CMID: cmid, Kind: kind, Target: target, Seq: seq, Limit: limit,
			Members: []string{member, conv}, Title: kind, Add: []string{cmid}}
		if after {
			req.After = &seq
		} else {
			req.Before = &target
		}
		if body, err := encodeBody(member); err == nil {
			req.Body = body
		}
		sameAsEncodingJSON(t, &req)
	})
}

// BenchmarkEncodeSend encodes a send request: encodeRequest, and
// encoding/json, which it replaced.
func BenchmarkEncodeSend(b *testing.B) {
	body, err := encodeBody(json.RawMessage(`{"t":1795270817000123456,"text":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`))
	if err != nil {
		b.Fatal(err)
	}
	req := &request{Op: "send", ID: "r1842", Conv: "2lKGCVZf5PqQ8bW0ZKUVTXh5Qx3", CMID: "1z9", Kind: "text", Body: body}
	b.Run("encodeRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeRequest(req)
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
