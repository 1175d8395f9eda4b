package connector

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/segmentio/ksuid"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Fuzz targets for everything a connector decodes from outside: client
// frames (the first, auth, and the rest), HTTP API bodies, paths and
// queries, outcome batches from the log and push batches from fanout. Each
// calls the function the handler calls. Run with scripts/fuzz, or
// go test -run '^$' -fuzz '^FuzzRequestFrame$' ./connector.

var (
	fuzzSecret = []byte(strings.Repeat("s", 32))
	fuzzNow    = time.Unix(1_900_000_000, 0)
	fuzzGroup  = "3MPbDgfPSpdk4yX6HH4DZAM2c1v"
)

// knownCode reports whether code is an error code of the protocol.
func knownCode(code string) bool {
	_, ok := apiStatus[code]
	return ok
}

// checkRefusal fails unless e is a clear refusal: a known code and a
// message, small enough to answer with.
func checkRefusal(t *testing.T, e *inputError) {
	t.Helper()
	if !knownCode(e.code) || e.code == schema.CodeInternal || e.msg == "" || len(e.msg) > 512 {
		t.Fatalf("refusal %q %q: want a client error code and a short message", e.code, e.msg)
	}
}

// roundTrip fails unless cmd encodes and decodes to itself.
func roundTrip(t *testing.T, cmd *parleyv1.Command) {
	t.Helper()
	v, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatalf("encode %v: %v", cmd, err)
	}
	back := new(parleyv1.Command)
	if err := proto.Unmarshal(v, back); err != nil || !proto.Equal(back, cmd) {
		t.Fatalf("command does not round-trip: %v -> %v (%v)", cmd, back, err)
	}
}

// truncations are cuts of data inside it (nats-style: a frame split or cut
// short must be refused or read, never half-read into a crash).
func truncations(data []byte) [][]byte {
	if len(data) < 2 {
		return nil
	}
	return [][]byte{data[:1], data[:len(data)/2], data[:len(data)-1]}
}

// FuzzAuthFrame feeds first frames to parseAuth: it never panics; a frame
// it accepts is an auth frame whose token verifies for the user it names,
// with a valid device; a refused one gets close 4002 (not auth) or 4001
// (bad token or device), with a reason.
func FuzzAuthFrame(f *testing.F) {
	tok, err := auth.Sign(fuzzSecret, "alice", time.Hour, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	expired, _ := auth.Sign(fuzzSecret, "alice", time.Hour, fuzzNow.Add(-2*time.Hour))
	other, _ := auth.Sign([]byte(strings.Repeat("x", 32)), "alice", time.Hour, fuzzNow)
	for _, frame := range []string{
		`{"op":"auth","id":"1","token":"` + tok + `","device":"phone"}`,
		`{"op":"auth","token":"` + tok + `","device":"bad device"}`,
		`{"op":"auth","token":"` + tok + `"}`,
		`{"op":"auth","token":"` + expired + `","device":"phone"}`,
		`{"op":"auth","token":"` + other + `","device":"phone"}`,
		`{"op":"send","conv":"x"}`,
		`{"op":"auth","token":12}`,
		`[]`, `null`, ``, `{"op":"auth"`,
	} {
		f.Add([]byte(frame))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(data []byte) {
			req, user, cerr := parseAuth(data, fuzzSecret, fuzzNow)
			if cerr != nil {
				if (cerr.Code != CloseNoAuth && cerr.Code != CloseBadToken) || cerr.Reason == "" {
					t.Fatalf("refused with %d %q", cerr.Code, cerr.Reason)
				}
				if req != nil || user != "" {
					t.Fatal("a refused frame yielded a session")
				}
				return
			}
			if req.Op != "auth" || !schema.ValidUserID(req.Device) {
				t.Fatalf("accepted op %q device %q", req.Op, req.Device)
			}
			if u, err := auth.Verify(fuzzSecret, req.Token, fuzzNow); err != nil || u != user {
				t.Fatalf("accepted a token that does not verify (%q, %v) as %q", u, err, user)
			}
		}
		check(data)
		for _, cut := range truncations(bytes.TrimSpace(data)) {
			check(cut)
		}
	})
}

// FuzzRequestFrame feeds frames after auth to the decoders the read loop
// and the request handlers call (parseFrame, then commandsFor or
// historyRange by op). It checks that nothing panics; that a frame
// parseFrame's short way (parseFlat) takes is decoded as json.Unmarshal
// decodes it; that a refusal has a
// client code and message; that the commands of an accepted request are
// the user's, on a valid conversation, one per member change with the
// additions first, and survive encoding; that an accepted history range is
// valid; that the reply frames encode as JSON; and that a JSON object cut
// short is refused, never half-read.
func FuzzRequestFrame(f *testing.F) {
	for _, frame := range []string{
		`{"op":"send","id":"1","conv":"` + fuzzGroup + `","cmid":"c1","body":{"text":"hi"}}`,
		`{"op":"send","conv":"` + fuzzGroup + `","cmid":"c1","kind":"image","body":"x"}`,
		`{"op":"edit","conv":"` + fuzzGroup + `","cmid":"c2","target":3,"body":[1,[2,[3]]]}`,
		`{"op":"revoke","conv":"` + fuzzGroup + `","cmid":"c3","target":3}`,
		`{"op":"read","conv":"` + fuzzGroup + `","seq":7}`,
		`{"op":"create","kind":"direct","members":["bob"]}`,
		`{"op":"create","kind":"group","members":["bob","carol"],"title":"t","conv":"` + fuzzGroup + `","cmid":"g"}`,
		`{"op":"create","kind":"group","conv":"not-a-ksuid"}`,
		`{"op":"members","conv":"` + fuzzGroup + `","add":["dave"],"remove":["carol"]}`,
		`{"op":"members","conv":"` + fuzzGroup + `"}`,
		`{"op":"history","conv":"` + fuzzGroup + `","after":0,"limit":50}`,
		`{"op":"history","conv":"` + fuzzGroup + `","before":10}`,
		`{"op":"history","conv":"` + fuzzGroup + `","after":1,"before":10,"limit":5000}`,
		`{"op":"sync","id":"s"}`, `{"op":"ping","id":"p"}`, `{"op":"typing","conv":"` + fuzzGroup + `"}`,
		`{"op":"send","body":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
		`{"op":"send","target":"x"}`, `{"op":1}`, `[1,2]`, `"str"`, `{"id":"x","op":"send"`,
	} {
		f.Add([]byte(frame))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var flat, full request
		if parseFlat(data, &flat) {
			if err := jsonv2.Unmarshal(data, &full); err != nil || !reflect.DeepEqual(flat, full) {
				t.Fatalf("%q: parseFlat read %+v; json.Unmarshal %+v, %v", data, flat, full, err)
			}
		}
		req, perr := parseFrame(data)
		if req == nil {
			t.Fatal("parseFrame returned no request")
		}
		if perr != nil {
			checkRefusal(t, perr)
			if _, err := json.Marshal(errorReply(req.ID, perr.code, perr.msg)); err != nil {
				t.Fatal(err)
			}
			return
		}
		if trimmed := bytes.TrimSpace(data); len(trimmed) > 1 && trimmed[0] == '{' {
			for _, cut := range truncations(trimmed) {
				if _, e := parseFrame(cut); e == nil {
					t.Fatalf("a frame cut short was read: %q", cut)
				}
			}
		}
		switch req.Op {
		case "send", "edit", "revoke", "read", "create", "members":
			cmds, e := commandsFor("alice", req)
			if e != nil {
				checkRefusal(t, e)
				return
			}
			if len(cmds) == 0 || len(cmds) > 2 || (len(cmds) == 2 && req.Op != "members") {
				t.Fatalf("%s made %d commands", req.Op, len(cmds))
			}
			for i, cmd := range cmds {
				if cmd.From != "alice" || !schema.ValidConvID(cmd.Conv) || cmd.Body == nil {
					t.Fatalf("command %v", cmd)
				}
				roundTrip(t, cmd)
				if req.Op == "members" && i == 0 && len(req.Add) > 0 && cmd.GetAddMembers() == nil {
					t.Fatal("the additions do not come first")
				}
			}
			if req.Op == "create" {
				if k := cmds[0].GetCreate().GetKind(); k == parleyv1.ConvKind_CONV_KIND_DIRECT && cmds[0].Conv != schema.DirectConvID("alice", req.Members[0]) {
					t.Fatalf("direct create on %s", cmds[0].Conv)
				} else if k == parleyv1.ConvKind_CONV_KIND_GROUP {
					if _, err := ksuid.Parse(cmds[0].Conv); err != nil {
						t.Fatalf("group create on %q", cmds[0].Conv)
					}
				}
			}
		case "history":
			r, e := historyRange(req)
			if e != nil {
				checkRefusal(t, e)
				return
			}
			if r.Validate() != nil || !schema.ValidConvID(req.Conv) {
				t.Fatalf("accepted history %+v of %q", r, req.Conv)
			}
		}
	})
}

// FuzzAPIRequest feeds HTTP API bodies to the decoder of each endpoint
// (route picks it; conv is the path's conversation). It checks that
// nothing panics; that a refusal has a client code (with an HTTP status)
// and a message; that an accepted request yields commands by a valid user
// on a valid conversation that survive encoding, or a token request within
// the TTL bounds; and that a body cut short is refused.
func FuzzAPIRequest(f *testing.F) {
	bodies := [][]string{
		{`{"user":"alice"}`, `{"user":"alice","ttl_s":60}`, `{"user":"alice","ttl_s":0}`, `{"user":"alice","ttl_s":99999999999}`, `{"user":5}`},
		{`{"kind":"direct","members":["alice","bob"],"as":"alice"}`, `{"kind":"group","members":["bob"],"title":"t","as":"alice","conv":"` + fuzzGroup + `","cmid":"x"}`,
			`{"kind":"group","as":"alice","conv":"nope"}`, `{"kind":"direct","members":["alice"],"as":"alice"}`},
		{`{"add":["bob"],"remove":["carol"],"as":"alice"}`, `{"as":"alice"}`, `{"add":"bob","as":"alice"}`},
		{`{"from":"alice","cmid":"c1","body":{"a":1}}`, `{"from":"alice","cmid":"c1","kind":"image","body":"x"}`, `{"from":"alice","body":1}`,
			`{"from":"alice","cmid":"c","body":` + strings.Repeat("[", 80) + strings.Repeat("]", 80) + `}`},
	}
	for route, bs := range bodies {
		for _, b := range bs {
			f.Add(uint8(route), fuzzGroup, []byte(b))
		}
	}
	f.Add(uint8(0), "", []byte(`[]`))
	f.Add(uint8(3), fuzzGroup, []byte(`not json`))
	f.Fuzz(func(t *testing.T, route uint8, conv string, body []byte) {
		if !schema.ValidConvID(conv) {
			conv = fuzzGroup // the handlers check the path first (FuzzAPIPath)
		}
		parse := func(body []byte) ([]*parleyv1.Command, *inputError) {
			switch route % 4 {
			case 0:
				user, ttl, e := parseTokenRequest(body)
				if e == nil && (!schema.ValidUserID(user) || ttl <= 0 || ttl > auth.MaxTTL) {
					t.Fatalf("token for %q for %v", user, ttl)
				}
				return nil, e
			case 1:
				cmd, e := parseCreateRequest(body)
				if e != nil {
					return nil, e
				}
				return []*parleyv1.Command{cmd}, nil
			case 2:
				return parseMembersRequest(conv, body)
			default:
				cmd, e := parseSendRequest(conv, body)
				if e != nil {
					return nil, e
				}
				if n := len(cmd.GetSend().GetBody()); n == 0 || n > schema.MaxBodyLen || !json.Valid(cmd.GetSend().GetBody()) {
					t.Fatalf("accepted a body of %d bytes", n)
				}
				return []*parleyv1.Command{cmd}, nil
			}
		}
		cmds, e := parse(body)
		if e != nil {
			checkRefusal(t, e)
			return
		}
		for _, cmd := range cmds {
			if !schema.ValidUserID(cmd.From) || !schema.ValidConvID(cmd.Conv) || cmd.Body == nil {
				t.Fatalf("command %v", cmd)
			}
			roundTrip(t, cmd)
		}
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 1 {
			for _, cut := range truncations(trimmed) {
				if _, e := parse(cut); e == nil {
					t.Fatalf("a body cut short was read: %q", cut)
				}
			}
		}
	})
}

// FuzzAPIPath feeds request paths and queries to the router's decoders
// (parseAPIPath, pathConv's check, parseEventsQuery): nothing panics, a
// route's segments are those it names, and an accepted events query is a
// valid range.
func FuzzAPIPath(f *testing.F) {
	for _, c := range [][2]string{
		{"/v1/tokens", ""}, {"/v1/conversations", ""},
		{"/v1/conversations/" + fuzzGroup + "/events", "after=3&limit=10"},
		{"/v1/conversations/" + fuzzGroup + "/events", "before=9"},
		{"/v1/conversations/" + fuzzGroup + "/events", "after=1&before=9"},
		{"/v1/conversations/" + fuzzGroup + "/events", "limit=100000&after=-1"},
		{"/v1/conversations/x/messages", ""}, {"/v1/conversations/x/members", ""},
		{"/v1/users/alice/conversations", ""}, {"/v1/users//conversations", ""}, {"/v1//", "a=%zz"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		route, method, seg := parseAPIPath(path)
		switch route {
		case routeNone:
			return
		case routeTokens, routeCreate:
			if len(seg) != 1 || method != fasthttp.MethodPost {
				t.Fatalf("%q: %v %v", path, seg, method)
			}
		default:
			if len(seg) != 3 {
				t.Fatalf("%q: %v", path, seg)
			}
		}
		if route != routeEvents {
			return
		}
		var args fasthttp.Args
		args.Parse(query)
		r, e := parseEventsQuery(&args)
		if e != nil {
			checkRefusal(t, e)
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted %q as %+v: %v", query, r, err)
		}
	})
}

// FuzzOutcomeBatch feeds records of the outcomes topic to
// decodeOutcomeBatch, as the commander reads them: nothing panics; a
// record under another node's key is not this node's; a refused one wraps
// ErrUndecodable or ErrMalformed; accepted outcomes re-encode to
// themselves and each gives Do an answer (a rejection with a client code).
func FuzzOutcomeBatch(f *testing.F) {
	batch := &parleyv1.OutcomeBatch{Node: "node-1", Outcomes: []*parleyv1.Outcome{
		{MsgId: "m1", Conv: fuzzGroup, Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED,
			Event: &parleyv1.Event{Conv: fuzzGroup, Seq: 5, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m1", From: "alice"}},
		{MsgId: "m2", Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED, Reason: parleyv1.Reason_REASON_NOT_MEMBER, Message: "no"},
		{MsgId: "m3", Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, Event: &parleyv1.Event{Seq: 2}},
		{MsgId: "m4", Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED, Reason: 99},
	}}
	v, _ := proto.Marshal(batch)
	f.Add([]byte("node-1"), v)
	f.Add([]byte("node-2"), v)
	other, _ := proto.Marshal(&parleyv1.OutcomeBatch{Node: "node-2"})
	f.Add([]byte("node-1"), other)
	f.Add([]byte("node-1"), []byte("\x0a\xff"))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		outs, err := decodeOutcomeBatch("node-1", key, value)
		if err != nil {
			if !errors.Is(err, schema.ErrUndecodable) && !errors.Is(err, schema.ErrMalformed) {
				t.Fatalf("error %v wraps no reason", err)
			}
			return
		}
		if string(key) != "node-1" && outs != nil {
			t.Fatal("took another node's outcomes")
		}
		back, err := proto.Marshal(&parleyv1.OutcomeBatch{Node: "node-1", Outcomes: outs})
		if err != nil {
			t.Fatal(err)
		}
		var again parleyv1.OutcomeBatch
		if err := proto.Unmarshal(back, &again); err != nil || len(again.Outcomes) != len(outs) {
			t.Fatalf("outcomes do not round-trip: %v", err)
		}
		for _, o := range outs {
			got, err := outcome(o)
			var rej *RejectedError
			switch {
			case errors.As(err, &rej):
				if !knownCode(rej.Code()) || got != o {
					t.Fatalf("rejection %v gives code %q", o.Reason, rej.Code())
				}
			case err != nil:
				t.Fatal(err)
			}
			_ = got.GetEvent().GetSeq() // what the handlers read, on any outcome
		}
		for _, cut := range truncations(value) {
			_, _ = decodeOutcomeBatch("node-1", key, cut)
		}
	})
}

// FuzzPushBatch feeds push bodies to pushFrames, as the push endpoint
// reads them: nothing panics; a body that is not a PushBatch is refused;
// every frame is a JSON object whose op is event or typing, one per push
// with an event or typing signal, in order; and the frames stay within a
// bound of the body (JSON escaping at most sextuples a byte).
func FuzzPushBatch(f *testing.F) {
	ev := &parleyv1.Event{Conv: fuzzGroup, Seq: 3, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", From: "alice",
		Kind: "text", Body: []byte(`{"text":"hi"}`), Ts: 1}
	for _, b := range []*parleyv1.PushBatch{
		{From: "fanout", Pushes: []*parleyv1.Push{{Event: ev, Users: []string{"alice", "bob"}}}},
		{Pushes: []*parleyv1.Push{{Typing: &parleyv1.Typing{Conv: fuzzGroup, From: "bob", Ts: 1}, Users: []string{"alice"}}, {Users: []string{"x"}}}},
		{Pushes: []*parleyv1.Push{{Event: &parleyv1.Event{Body: []byte("not json \xff"), Type: 99}}}},
		{Pushes: []*parleyv1.Push{{Event: &parleyv1.Event{Type: parleyv1.EventType_EVENT_TYPE_CREATED, ConvKind: 7, Members: []string{"a"}}}}},
	} {
		v, _ := proto.Marshal(b)
		f.Add(v)
	}
	f.Add([]byte("\x12\x05\x0a\x03\x0a\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		frames, err := pushFrames(body)
		var batch parleyv1.PushBatch
		decodes := proto.Unmarshal(body, &batch) == nil
		if err != nil {
			if decodes || !errors.Is(err, schema.ErrUndecodable) {
				t.Fatalf("refused a body that decodes, or without a reason: %v", err)
			}
			return
		}
		if !decodes {
			t.Fatal("took a body that does not decode")
		}
		want, size := 0, 0
		for _, p := range batch.Pushes {
			if p.GetEvent() != nil || p.GetTyping() != nil {
				want++
			}
		}
		if len(frames) != want {
			t.Fatalf("%d frames for %d pushes", len(frames), want)
		}
		for i, fr := range frames {
			var head struct {
				Op string `json:"op"`
			}
			if err := json.Unmarshal(fr.frame, &head); err != nil || (head.Op != "event" && head.Op != "typing") {
				t.Fatalf("frame %d is %q (%v)", i, fr.frame, err)
			}
			size += len(fr.frame)
		}
		if size > 6*len(body)+256*len(frames) {
			t.Fatalf("frames of %d bytes from a body of %d", size, len(body))
		}
		for _, cut := range truncations(body) {
			_, _ = pushFrames(cut)
		}
	})
}
