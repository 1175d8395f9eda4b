package e2e

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/segmentio/ksuid"

	"github.com/parley-im/parley/connector"
)

// peer is a raw client connection that keeps every frame it reads past
// while waiting for a reply, so that no push is lost to the test.
type peer struct {
	t       *testing.T
	conn    *websocket.Conn
	n       int
	backlog []map[string]any
}

func (p *peer) next() map[string]any {
	p.t.Helper()
	if len(p.backlog) > 0 {
		f := p.backlog[0]
		p.backlog = p.backlog[1:]
		return f
	}
	_ = p.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var f map[string]any
	if err := p.conn.ReadJSON(&f); err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			p.t.Fatalf("closed with %d", ce.Code)
		}
		p.t.Fatalf("read: %v", err)
	}
	return f
}

// call sends req and returns its reply; frames before it stay for next.
func (p *peer) call(req map[string]any) map[string]any {
	p.t.Helper()
	p.n++
	id := fmt.Sprint("r", p.n)
	req["id"] = id
	if err := p.conn.WriteJSON(req); err != nil {
		p.t.Fatal(err)
	}
	var skipped []map[string]any
	for {
		// Read from the socket, not the backlog: the reply is newer.
		_ = p.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		var f map[string]any
		if err := p.conn.ReadJSON(&f); err != nil {
			p.t.Fatalf("waiting for reply %s: %v", id, err)
		}
		if f["id"] == id {
			p.backlog = append(p.backlog, skipped...)
			return f
		}
		skipped = append(skipped, f)
	}
}

// pushes reads frames until an event of conv with seq last (or, with
// typingFrom set, a typing signal from that user) and returns the seqs of
// conv's events and the senders of conv's typing signals it saw, in order.
func (p *peer) pushes(conv string, last float64, typingFrom string) (seqs []float64, typing []string) {
	p.t.Helper()
	for {
		f := p.next()
		if f["conv"] != conv {
			continue
		}
		switch f["op"] {
		case "event":
			seq, _ := f["seq"].(float64)
			seqs = append(seqs, seq)
			if seq == last && typingFrom == "" {
				return seqs, typing
			}
		case "typing":
			from, _ := f["from"].(string)
			typing = append(typing, from)
			if from == typingFrom {
				return seqs, typing
			}
		}
	}
}

// TestSecurityPushesOnlyToMembers: through the whole pipeline (sequencer,
// writer, fanout pushing to the connector), no event of a conversation
// reaches a user who is not a member at its seq: not a stranger, not a
// member after their removal (until they are added again); and a
// stranger's typing reaches nobody.
func TestSecurityPushesOnlyToMembers(t *testing.T) {
	e := newEdge(t, connector.GatewayConfig{}, connector.CommanderConfig{}, nil)
	login := func(user string) *peer { return &peer{t: t, conn: e.authed(t, user, nil)} }
	alice, bob, mallory := login("alice"), login("bob"), login("mallory")
	conv := ksuid.New().String()
	ok := func(what string, r map[string]any, op string) float64 {
		t.Helper()
		if r["op"] != op {
			t.Fatalf("%s: %v", what, r)
		}
		seq, _ := r["seq"].(float64)
		return seq
	}
	ok("create", alice.call(map[string]any{"op": "create", "kind": "group", "conv": conv, "cmid": "c", "members": []string{"bob"}}), "created") // 1
	ok("send", alice.call(map[string]any{"op": "send", "conv": conv, "cmid": "m1", "body": "before"}), "ack")                                   // 2

	// A stranger's typing is dropped. Typing signals of a conversation
	// reach a connection in the order they were sent, so once a member's
	// later one arrives, the stranger's would have.
	if err := mallory.conn.WriteJSON(map[string]any{"op": "typing", "conv": conv}); err != nil {
		t.Fatal(err)
	}
	ok("ping", mallory.call(map[string]any{"op": "ping"}), "pong") // the typing signal has been handed to the log
	if err := bob.conn.WriteJSON(map[string]any{"op": "typing", "conv": conv}); err != nil {
		t.Fatal(err)
	}
	aliceSeqs, typing := alice.pushes(conv, 0, "bob")
	if slices.Contains(typing, "mallory") {
		t.Errorf("a stranger's typing reached a member: %v", typing)
	}

	ok("remove bob", alice.call(map[string]any{"op": "members", "conv": conv, "remove": []string{"bob"}}), "ok")   // 3
	ok("send", alice.call(map[string]any{"op": "send", "conv": conv, "cmid": "m2", "body": "bob is gone"}), "ack") // 4
	ok("add mallory", alice.call(map[string]any{"op": "members", "conv": conv, "add": []string{"mallory"}}), "ok") // 5
	ok("add bob again", alice.call(map[string]any{"op": "members", "conv": conv, "add": []string{"bob"}}), "ok")   // 6
	last := ok("send", alice.call(map[string]any{"op": "send", "conv": conv, "cmid": "m3", "body": "all here"}), "ack")
	if last != 7 {
		t.Fatalf("the last seq is %v, want 7", last)
	}

	// A conversation's events reach a connection in seq order, so each
	// stream up to the last seq holds everything its user was pushed.
	for _, c := range []struct {
		name string
		p    *peer
		want []float64
	}{
		{"alice", alice, []float64{1, 2, 3, 4, 5, 6, 7}},
		{"bob", bob, []float64{1, 2, 3, 6, 7}}, // his removal, then nothing until he is back
		{"mallory", mallory, []float64{5, 6, 7}},
	} {
		seqs, _ := c.p.pushes(conv, last, "")
		if c.p == alice {
			seqs = append(aliceSeqs, seqs...)
		}
		// A push may come twice (fanout is at least once).
		if got := slices.Compact(slices.Sorted(slices.Values(seqs))); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s was pushed seqs %v, want %v", c.name, got, c.want)
		}
	}
}
