package connector_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/connector"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

var pushSecret = []byte(strings.Repeat("p", 16))

func postPush(t *testing.T, addr string, secret []byte, b *parleyv1.PushBatch) int {
	t.Helper()
	body, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+connector.PushPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(connector.PushSecretHeader, string(secret))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPushEndpoint: a push batch reaches every connection of its users on
// this node, in order, and nobody else; a wrong secret is refused.
func TestPushEndpoint(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{PushListen: "127.0.0.1:0", PushSecret: pushSecret})
	push := g.g.PushAddr().String()
	phone, laptop := g.login(t, "alice", "phone"), g.login(t, "alice", "laptop")
	bob := g.login(t, "bob", "phone")
	ev := func(seq int64) *parleyv1.Event {
		return &parleyv1.Event{Conv: "c1", Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", From: "carol", Kind: "text", Body: []byte(`"x"`), Ts: 1}
	}
	batch := &parleyv1.PushBatch{From: "test", Pushes: []*parleyv1.Push{
		{Event: ev(1), Users: []string{"alice"}},
		{Event: ev(2), Users: []string{"alice", "nobody-here"}},
		{Event: ev(3), Users: []string{"alice"}},
	}}
	if code := postPush(t, push, []byte(strings.Repeat("x", 16)), batch); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", code)
	}
	if code := postPush(t, push, pushSecret, batch); code != http.StatusOK {
		t.Fatalf("push: %d", code)
	}
	for _, c := range []*client{phone, laptop} {
		for seq := 1.0; seq <= 3; seq++ {
			r := c.read()
			if r["op"] != "event" || r["conv"] != "c1" || r["seq"] != seq || r["type"] != "message" || r["from"] != "carol" {
				t.Fatalf("push %v: got %v", seq, r)
			}
		}
	}
	// Bob's next frame is the answer to his ping: nothing was pushed to him.
	bob.write(map[string]any{"op": "ping", "id": "b"})
	if r := bob.read(); r["op"] != "pong" {
		t.Fatalf("bob got %v", r)
	}
}

// TestCoalescedFrames: frames queued together go out in one write; each of
// the three header sizes (payloads under 126 bytes, under 64 KiB, larger)
// reaches the client intact and in order, with WebSocket pings answered
// in between.
func TestCoalescedFrames(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{PushListen: "127.0.0.1:0", PushSecret: pushSecret})
	c := g.login(t, "alice", "phone")
	pongs := make(chan string, 10)
	c.conn.SetPongHandler(func(data string) error { pongs <- data; return nil })
	sizes := []int{10, 125, 126, 1000, 65535, 65536, 200 << 10}
	var pushes []*parleyv1.Push
	for i, n := range sizes {
		body := `"` + strings.Repeat(string(rune('a'+i)), n) + `"`
		pushes = append(pushes, &parleyv1.Push{Users: []string{"alice"}, Event: &parleyv1.Event{
			Conv: "c1", Seq: int64(i + 1), Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", From: "bob", Kind: "text", Body: []byte(body), Ts: 1,
		}})
	}
	if err := c.conn.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if code := postPush(t, g.g.PushAddr().String(), pushSecret, &parleyv1.PushBatch{Pushes: pushes}); code != http.StatusOK {
		t.Fatalf("push: %d", code)
	}
	for i, n := range sizes {
		r := c.read()
		body, _ := r["body"].(string)
		if r["seq"] != float64(i+1) || len(body) != n || strings.Trim(body, string(rune('a'+i))) != "" {
			t.Fatalf("frame %d: seq %v, body of %d bytes; want seq %d, %d bytes", i, r["seq"], len(body), i+1, n)
		}
	}
	select {
	case p := <-pongs:
		if p != "p1" {
			t.Fatalf("pong %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
	}
}

// TestPushRuns: pushes in a row to the same users are queued together;
// each connection still gets exactly its events, in the batch's order,
// where the recipients change from push to push.
func TestPushRuns(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{PushListen: "127.0.0.1:0", PushSecret: pushSecret})
	alice, bob := g.login(t, "alice", "phone"), g.login(t, "bob", "phone")
	both, a, b := []string{"alice", "bob"}, []string{"alice"}, []string{"bob"}
	var pushes []*parleyv1.Push
	for i, users := range [][]string{both, both, a, both, b, both, both, a, a} {
		pushes = append(pushes, &parleyv1.Push{Users: users, Event: &parleyv1.Event{
			Conv: "c1", Seq: int64(i + 1), Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", From: "carol", Kind: "text", Body: []byte(`"x"`), Ts: 1,
		}})
	}
	if code := postPush(t, g.g.PushAddr().String(), pushSecret, &parleyv1.PushBatch{Pushes: pushes}); code != http.StatusOK {
		t.Fatalf("push: %d", code)
	}
	for _, want := range []struct {
		user string
		c    *client
		seqs []float64
	}{{"alice", alice, []float64{1, 2, 3, 4, 6, 7, 8, 9}}, {"bob", bob, []float64{1, 2, 4, 5, 6, 7}}} {
		for _, seq := range want.seqs {
			if r := want.c.read(); r["op"] != "event" || r["seq"] != seq {
				t.Fatalf("%s: got %v, want the event of seq %v", want.user, r, seq)
			}
		}
		want.c.write(map[string]any{"op": "ping", "id": "end"})
		if r := want.c.read(); r["op"] != "pong" {
			t.Fatalf("%s: got %v after its events, want the pong", want.user, r)
		}
	}
}

// TestPushBurst: a push batch of far more frames for one connection than
// its queue bound reaches a client that reads, whole and in order; the
// bound closes only a client that stops reading (TestGatewaySlowConsumer).
func TestPushBurst(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{PushListen: "127.0.0.1:0", PushSecret: pushSecret, QueueFrames: 4})
	c := g.login(t, "alice", "phone")
	const n = 1000
	body := []byte(`"` + strings.Repeat("x", 2000) + `"`)
	pushes := make([]*parleyv1.Push, n)
	for i := range pushes {
		pushes[i] = &parleyv1.Push{Users: []string{"alice"}, Event: &parleyv1.Event{
			Conv: "c1", Seq: int64(i + 1), Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", From: "bob", Kind: "text", Body: body, Ts: 1,
		}}
	}
	got := make(chan error, 1)
	go func() {
		for i := range n {
			_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			var r map[string]any
			if err := c.conn.ReadJSON(&r); err != nil {
				got <- fmt.Errorf("after %d events: %w", i, err)
				return
			}
			if r["op"] != "event" || r["seq"] != float64(i+1) {
				got <- fmt.Errorf("frame %d: %v %v", i, r["op"], r["seq"])
				return
			}
		}
		got <- nil
	}()
	if code := postPush(t, g.g.PushAddr().String(), pushSecret, &parleyv1.PushBatch{Pushes: pushes}); code != http.StatusOK {
		t.Fatalf("push: %d", code)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := g.g.Closes(connector.CloseSlowConsumer); n != 0 {
		t.Fatalf("%d slow-consumer closes", n)
	}
}
