package client

import (
	"bytes"

	gojson "github.com/goccy/go-json"

	"github.com/parley-im/parley/schema"
)

// decodeFrame decodes a server frame. Every event a device receives passes
// here, a history page holds up to 1,000 of them, and encoding/json took
// most of a catch-up's time in the client: goccy/go-json decodes the same
// Go types to the same values about five times faster
// (BenchmarkDecodeHistoryPage; FuzzDecodeFrame checks they agree). A
// pushed message in the form the server writes it takes a shorter way
// still (decodePush).
func decodeFrame(data []byte, f *frame) error {
	if decodePush(data, f) {
		return nil
	}
	return gojson.Unmarshal(data, f)
}

// decodePush decodes a pushed event written the way the server writes one
// ({"op":"event", then schema.AppendEventFields): its keys in that order,
// each once, its ids and names plain printable ASCII without escapes, its
// numbers integers of up to 18 digits, and no target or members (a
// message, the push a busy device gets most, has neither). It reports
// false, leaving f as it was, for any other frame, which decodeFrame then
// decodes in full.
//
// What it accepts means the same as it does to encoding/json, and it sets
// the same fields (TestDecodePush, FuzzDecodeFrame), in two allocations:
// the strings share one, the body has its own. The general decoder makes
// eight, and took a third of the load tool's CPU in a busy group (0.55 µs
// a push there; this takes 0.38, a quarter of it checking the body).
func decodePush(data []byte, f *frame) bool {
	p := pushScanner{b: data}
	if !p.lit(`{"op":"event","conv":`) {
		return false
	}
	var spans [len(pushStringKeys) + 1]span // conv, then the optional strings
	var have [len(pushStringKeys)]bool
	var ok bool
	if spans[0], ok = p.str(); !ok || !p.lit(`,"seq":`) {
		return false
	}
	seq, ok := p.int()
	if !ok || !p.lit(`,"type":`) {
		return false
	}
	typeSpan, ok := p.str()
	if !ok {
		return false
	}
	for i, key := range pushStringKeys {
		if p.lit(key) {
			if spans[i+1], ok = p.str(); !ok {
				return false
			}
			have[i] = true
		}
	}
	// The frame ends with ,"ts":N}; the body, if any, is what lies between
	// ,"body": and that end, and must be one JSON value.
	tsAt, ts, ok := p.tail()
	if !ok {
		return false
	}
	var body []byte
	hasBody := p.lit(`,"body":`)
	if hasBody {
		if p.i > tsAt {
			return false
		}
		body = data[p.i:tsAt]
		if len(body) == 0 || isSpace(body[0]) || isSpace(body[len(body)-1]) || !gojson.Valid(body) {
			return false
		}
	} else if p.i != tsAt {
		return false // a target, members, or a key out of order
	}

	// The strings are cut from one copy of the frame from the conversation
	// id to the last of them: one allocation. A known type is a constant.
	typ := eventTypeName(data[typeSpan.from:typeSpan.to])
	lo, hi := spans[0].from, spans[0].to
	for _, s := range spans {
		hi = max(hi, s.to)
	}
	if typ == "" {
		hi = max(hi, typeSpan.to)
	}
	all := string(data[lo:hi])
	next := func(s span) string { return all[s.from-lo : s.to-lo] }
	f.Op = "event"
	f.Conv, f.Seq = next(spans[0]), seq
	strs := [...]*string{&f.MsgID, &f.CMID, &f.From, &f.Kind, &f.Title}
	for i, dst := range strs {
		if have[i] {
			*dst = next(spans[i+1])
		}
	}
	if typ == "" {
		typ = next(typeSpan)
	}
	f.Type, f.TS = typ, ts
	if hasBody {
		f.Body = bytes.Clone(body)
	}
	return true
}

// pushStringKeys are the optional string members of a pushed event, in
// the order the server writes them; the fields they fill are listed in
// the same order in decodePush.
var pushStringKeys = [...]string{`,"msg_id":`, `,"cmid":`, `,"from":`, `,"kind":`, `,"title":`}

// eventTypeName returns the event type named by b as a constant (no
// allocation), or "" for a name it does not know.
func eventTypeName(b []byte) string {
	switch string(b) {
	case "message":
		return "message"
	case "edit":
		return "edit"
	case "revoke":
		return "revoke"
	case "created":
		return "created"
	case "member_added":
		return "member_added"
	case "member_removed":
		return "member_removed"
	case "read":
		return "read"
	}
	return ""
}

// span is data[from:to].
type span struct{ from, to int }

// pushScanner reads a frame in decodePush's form from b, at i.
type pushScanner struct {
	b []byte
	i int
}

// lit consumes s if the frame goes on with it.
func (p *pushScanner) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str consumes a string of printable ASCII without escapes and returns
// where its contents are.
func (p *pushScanner) str() (span, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return span{}, false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			s := span{p.i + 1, j}
			p.i = j + 1
			return s, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return span{}, false
		}
	}
	return span{}, false
}

// int consumes an integer as JSON writes it (no sign but '-', no leading
// zero, no fraction or exponent), of up to 18 digits so that it cannot
// overflow.
func (p *pushScanner) int() (int64, bool) {
	n, end, ok := schema.ParseJSONInt(p.b, p.i)
	if ok {
		p.i = end
	}
	return n, ok
}

// tail finds the frame's end, ,"ts":N}, and returns where it starts and N.
func (p *pushScanner) tail() (at int, ts int64, ok bool) {
	const key = `,"ts":`
	end := len(p.b) - 1
	if end < 0 || p.b[end] != '}' {
		return 0, 0, false
	}
	start := end
	for start > 0 && (p.b[start-1] >= '0' && p.b[start-1] <= '9' || p.b[start-1] == '-') {
		start--
	}
	at = start - len(key)
	if at < p.i || string(p.b[at:start]) != key {
		return 0, 0, false
	}
	ts, next, ok := schema.ParseJSONInt(p.b, start)
	return at, ts, ok && next == end
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
