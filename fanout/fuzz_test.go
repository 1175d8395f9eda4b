package fanout

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Fuzz targets for the records fanout reads besides events (those are
// schema.DecodeEvent's, fuzzed in package schema): presence and typing.
// Run with scripts/fuzz, or go test -run '^$' -fuzz '^FuzzPresenceRecord$'
// ./fanout.

// FuzzPresenceRecord feeds records of the presence topic to
// decodePresence and then into a presence view, as the view's reader does.
// It checks that nothing panics; that a refusal wraps ErrUndecodable or
// ErrMalformed; that an accepted heartbeat has a push address and an
// interval in bounds and makes its node alive now and dead after three
// intervals (no overflow); that an accepted user record routes the user to
// a live node; and that a tombstone removes what its key named.
func FuzzPresenceRecord(f *testing.F) {
	hb, _ := proto.Marshal(&parleyv1.NodeHeartbeat{Node: "node-1", PushAddr: "127.0.0.1:9000", Ts: 1, IntervalMs: 5000})
	up, _ := proto.Marshal(&parleyv1.UserPresence{User: "alice", Node: "node-1", Devices: []string{"phone", "laptop"}, Ts: 1})
	huge, _ := proto.Marshal(&parleyv1.NodeHeartbeat{Node: "node-1", PushAddr: "127.0.0.1:9000", IntervalMs: 1 << 62})
	wrong, _ := proto.Marshal(&parleyv1.NodeHeartbeat{Node: "node-2", PushAddr: "h:1", IntervalMs: 1})
	addr, _ := proto.Marshal(&parleyv1.NodeHeartbeat{Node: "node-1", PushAddr: "no port", IntervalMs: 1})
	none, _ := proto.Marshal(&parleyv1.UserPresence{User: "alice", Node: "node-1"})
	for _, c := range []struct {
		key   string
		value []byte
	}{
		{"n/node-1", hb}, {"u/alice/node-1", up}, {"n/node-1", nil}, {"u/alice/node-1", nil},
		{"n/node-1", huge}, {"n/node-1", wrong}, {"n/node-1", addr}, {"u/alice/node-1", none},
		{"u/alice/node-1", hb}, {"n/node-1", []byte("\xff")}, {"x/y", nil}, {"u//n", up}, {"n/a/b", hb},
	} {
		f.Add([]byte(c.key), c.value)
	}
	now := time.Unix(1_900_000_000, 0)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		rec, err := decodePresence(key, value)
		if err != nil {
			if !errors.Is(err, schema.ErrUndecodable) && !errors.Is(err, schema.ErrMalformed) {
				t.Fatalf("error %v wraps no reason", err)
			}
			return
		}
		if !schema.ValidNodeID(rec.node) || (rec.user != "" && !schema.ValidUserID(rec.user)) {
			t.Fatalf("accepted %+v", rec)
		}
		clock := now
		v := &presenceView{now: func() time.Time { return clock }, log: quiet, skip: func(string) {},
			nodes: map[string]*node{}, users: map[string][]string{}, pos: map[int32]int64{}}
		// A live node and a user on it, for the record to change.
		v.take(presenceRecord{node: rec.node, pushAddr: "127.0.0.1:1", interval: time.Second})
		v.take(presenceRecord{user: "alice", node: rec.node, devices: 1})
		v.take(rec)
		switch {
		case rec.user == "" && rec.gone:
			if v.alive(rec.node) {
				t.Fatal("a node's tombstone left it alive")
			}
		case rec.user == "":
			if !validPushAddr(rec.pushAddr) || rec.interval <= 0 || rec.interval > maxHeartbeatInterval {
				t.Fatalf("accepted heartbeat %+v", rec)
			}
			if !v.alive(rec.node) {
				t.Fatalf("a heartbeat of %v leaves its node dead", rec.interval)
			}
			clock = now.Add(deadAfter*rec.interval + time.Millisecond)
			if v.alive(rec.node) {
				t.Fatalf("a node silent for %d intervals of %v is alive", deadAfter, rec.interval)
			}
		case rec.gone:
			if _, off := v.route([]string{rec.user}); len(off) != 1 {
				t.Fatal("a user's tombstone left them online")
			}
		default:
			if rec.devices < 1 {
				t.Fatalf("accepted %+v", rec)
			}
			if _, off := v.route([]string{rec.user}); len(off) != 0 {
				t.Fatal("a user with devices on a live node is offline")
			}
		}
		for _, cut := range [][]byte{value[:len(value)/2], key[:len(key)/2]} {
			_, _ = decodePresence(key, cut)
			_, _ = decodePresence(cut, value)
		}
	})
}

// FuzzTypingRecord feeds records of the ephemeral topic to decodeTyping:
// nothing panics, a refusal wraps ErrUndecodable or ErrMalformed, and an
// accepted signal is keyed by its valid conversation and from a valid user.
func FuzzTypingRecord(f *testing.F) {
	const g = "3MPbDgfPSpdk4yX6HH4DZAM2c1v"
	ok, _ := proto.Marshal(&parleyv1.Typing{Conv: g, From: "alice", Ts: 1})
	bad, _ := proto.Marshal(&parleyv1.Typing{Conv: "a/b", From: "alice"})
	f.Add([]byte(g), ok)
	f.Add([]byte("other"), ok)
	f.Add([]byte("a/b"), bad)
	f.Add([]byte(g), []byte("\x0a"))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		ty, err := decodeTyping(key, value)
		if err != nil {
			if !errors.Is(err, schema.ErrUndecodable) && !errors.Is(err, schema.ErrMalformed) {
				t.Fatalf("error %v wraps no reason", err)
			}
			return
		}
		if ty.Conv != string(key) || !schema.ValidConvID(ty.Conv) || !schema.ValidUserID(ty.From) {
			t.Fatalf("accepted %v under %q", ty, key)
		}
		_, _ = decodeTyping(key, value[:len(value)/2])
	})
}
