package connector_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gobwas/ws"
	"github.com/segmentio/ksuid"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

var secret = []byte(strings.Repeat("s", 32))

type gw struct {
	*env
	addr string
	g    *connector.Gateway
	stop func() // stops the gateway (cleanly)
}

// newGateway runs a sequencer, a writer into Pebble, a commander and a
// gateway (with cfg's limits) over one embedded broker.
func newGateway(t *testing.T, cfg connector.GatewayConfig) *gw {
	e := newEnv(t)
	e.sequencer()
	return newGatewayOn(t, e, cfg)
}

// newGatewayOn runs a writer into Pebble, a commander ("node-1") and a
// gateway on e.
func newGatewayOn(t *testing.T, e *env, cfg connector.GatewayConfig) *gw {
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w, err := writer.New(writer.Config{Kafka: e.kc}, st)
	if err != nil {
		t.Fatal(err)
	}
	e.run(w.Run)
	c := e.commander("node-1", 10*time.Second, nil)
	cfg.Listen, cfg.TokenSecret = "127.0.0.1:0", secret
	if cfg.DrainWindow == 0 {
		cfg.DrainWindow = 100 * time.Millisecond
	}
	g, err := connector.NewGateway(cfg, c, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	stop := e.run(g.Run)
	return &gw{env: e, addr: g.Addr().String(), g: g, stop: stop}
}

type client struct {
	t    *testing.T
	conn *websocket.Conn
}

func token(t *testing.T, user string) string {
	tok, err := auth.Sign(secret, user, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (g *gw) dial(t *testing.T, header http.Header) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial("ws://"+g.addr+"/v1/ws", header)
}

// login connects and authenticates user on device.
func (g *gw) login(t *testing.T, user, device string) *client {
	t.Helper()
	conn, _, err := g.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn}
	c.write(map[string]any{"op": "auth", "id": "a", "token": token(t, user), "device": device})
	if r := c.read(); r["op"] != "auth_ok" || r["user"] != user || r["node"] == "" {
		t.Fatalf("auth answered %v", r)
	}
	return c
}

func (c *client) write(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() map[string]any {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var r map[string]any
	if err := c.conn.ReadJSON(&r); err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return r
}

// call sends a request and returns the reply with its id (no pushes exist
// yet on this connection).
func (c *client) call(req map[string]any) map[string]any {
	c.t.Helper()
	c.write(req)
	for {
		r := c.read()
		if r["id"] == req["id"] {
			return r
		}
	}
}

// closeCode reads until the server closes and returns the close code.
func closeCode(t *testing.T, conn *websocket.Conn) int {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

func TestGatewaySendAndHistory(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{RatePerSecond: 1000, RateBurst: 1000}) // the waits poll every 10 ms
	alice := g.login(t, "alice", "phone")
	if r := alice.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
		t.Fatalf("ping: %v", r)
	}
	created := alice.call(map[string]any{"op": "create", "id": "c", "kind": "group", "members": []string{"bob"}, "title": "team"})
	conv, _ := created["conv"].(string)
	if created["op"] != "created" || conv == "" {
		t.Fatalf("create: %v", created)
	}
	ack := alice.call(map[string]any{"op": "send", "id": "s1", "conv": conv, "cmid": "m-1", "kind": "text", "body": map[string]any{"text": "hi"}})
	if ack["op"] != "ack" || ack["seq"] != 2.0 || ack["cmid"] != "m-1" || ack["msg_id"] == "" {
		t.Fatalf("send: %v", ack)
	}
	again := alice.call(map[string]any{"op": "send", "id": "s2", "conv": conv, "cmid": "m-1", "body": map[string]any{"text": "hi"}})
	if again["op"] != "ack" || again["seq"] != 2.0 || again["msg_id"] != ack["msg_id"] {
		t.Fatalf("retry of m-1: %v, want the original %v", again, ack)
	}
	// A group create with a client-chosen id and cmid is safe to retry.
	gid := ksuid.New().String()
	for i := range 2 {
		r := alice.call(map[string]any{"op": "create", "id": fmt.Sprint("g", i), "kind": "group", "conv": gid, "cmid": "g-1", "members": []string{"bob"}})
		if r["op"] != "created" || r["conv"] != gid {
			t.Fatalf("create %d of group %s: %v", i, gid, r)
		}
	}
	if r := alice.call(map[string]any{"op": "create", "id": "gx", "kind": "group", "conv": "not-a-ksuid", "members": []string{"bob"}}); r["code"] != "bad_request" {
		t.Fatalf("create with a bad id: %v", r)
	}
	bob := g.login(t, "bob", "laptop")
	var h map[string]any
	eventually(t, "the writer to store the message", func() bool {
		h = bob.call(map[string]any{"op": "history", "id": "h", "conv": conv, "after": 0, "limit": 10})
		evs, _ := h["events"].([]any)
		return len(evs) == 2
	})
	evs, _ := h["events"].([]any)
	if h["op"] != "history_ok" || len(evs) != 2 || h["more"] != false {
		t.Fatalf("history: %v", h)
	}
	msg := evs[1].(map[string]any)
	if msg["type"] != "message" || msg["from"] != "alice" || msg["body"].(map[string]any)["text"] != "hi" || msg["seq"] != 2.0 {
		t.Fatalf("history event %v", msg)
	}
	mallory := g.login(t, "mallory", "x")
	if r := mallory.call(map[string]any{"op": "send", "id": "m", "conv": conv, "cmid": "x", "body": 1}); r["op"] != "error" || r["code"] != "forbidden" {
		t.Fatalf("non-member send: %v", r)
	}
	if r := mallory.call(map[string]any{"op": "history", "id": "mh", "conv": conv, "after": 0}); r["code"] != "forbidden" {
		t.Fatalf("non-member history: %v", r)
	}
	// Bad input gets an error and the connection stays open.
	mallory.write("not an object")
	if r := mallory.read(); r["op"] != "error" || r["code"] != "bad_request" {
		t.Fatalf("malformed frame: %v", r)
	}
	if r := mallory.call(map[string]any{"op": "dance", "id": "d"}); r["code"] != "bad_request" {
		t.Fatalf("unknown op: %v", r)
	}
	// The JSON rules (schema/README.md): each refusal says what is wrong
	// and carries the frame's id, even one after the fault.
	for _, tc := range []struct{ id, frame, msg string }{
		{"dup", `{"op":"ping","id":"dup","id":"dup"}`, `the frame has the name "id" more than once`},
		{"dupbody", `{"op":"send","id":"dupbody","body":{"a":[{"b":1,"b":2}]}}`, `"/body/a/0": an object has the name "b" more than once`},
		{"typ", `{"op":"send","target":"x","id":"typ"}`, "target: a JSON string where the protocol wants a whole number in range"},
		{"elem", `{"op":"create","id":"elem","kind":"group","members":["bob",7]}`, "members/1: a JSON number where the protocol wants a string"},
		{"frac", `{"op":"history","id":"frac","limit":1.5}`, "limit: a JSON number where the protocol wants a whole number in range"},
		{"utf", "{\"op\":\"ping\",\"id\":\"utf\",\"x\":\"\xff\"}", "the frame is not UTF-8 text"},
		{"sur", `{"op":"send","id":"sur","body":{"text":"\ud83d"}}`, `"/body/text": a \u escape is half of a surrogate pair, not a character`},
		{"", `{"op":"ping" "id":"x"}`, "the frame is not valid JSON (at byte 13)"},
		{"", `{"OP":"ping","ID":"case"}`, "missing op"},
	} {
		if err := mallory.conn.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		if r := mallory.read(); r["op"] != "error" || r["code"] != "bad_request" || r["message"] != tc.msg || (r["id"] != nil && r["id"] != tc.id) || (r["id"] == nil) != (tc.id == "") {
			t.Errorf("frame %q: %v; want bad_request %q with id %q", tc.frame, r, tc.msg, tc.id)
		}
	}
	if r := mallory.call(map[string]any{"op": "ping", "id": "still"}); r["op"] != "pong" {
		t.Fatalf("after bad input: %v", r)
	}
}

func TestGatewayRefusals(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{AuthTimeout: 500 * time.Millisecond, MaxConnsPerUser: 2,
		RatePerSecond: 5, RateBurst: 5, MaxStrikes: 10})
	// A wrong origin is refused at the upgrade.
	_, resp, err := g.dial(t, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	// The same host is allowed.
	conn, _, err := g.dial(t, http.Header{"Origin": {"http://" + g.addr}})
	if err != nil {
		t.Fatalf("same-host origin: %v", err)
	}
	conn.Close()

	cases := []struct {
		name string
		run  func(*websocket.Conn)
		code int
	}{
		{"bad token", func(c *websocket.Conn) {
			_ = c.WriteJSON(map[string]any{"op": "auth", "token": "nope", "device": "d"})
		}, connector.CloseBadToken},
		{"expired token", func(c *websocket.Conn) {
			tok, _ := auth.Sign(secret, "alice", time.Second, time.Now().Add(-time.Hour))
			_ = c.WriteJSON(map[string]any{"op": "auth", "token": tok, "device": "d"})
		}, connector.CloseBadToken},
		{"no auth in time", func(*websocket.Conn) {}, connector.CloseNoAuth},
		{"first frame not auth", func(c *websocket.Conn) { _ = c.WriteJSON(map[string]any{"op": "ping"}) }, connector.CloseNoAuth},
		{"oversize frame", func(c *websocket.Conn) {
			_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"auth","token":"`+strings.Repeat("x", 70<<10)+`"}`))
		}, connector.CloseTooLarge},
	}
	for _, tc := range cases {
		conn, _, err := g.dial(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		tc.run(conn)
		if code := closeCode(t, conn); code != tc.code {
			t.Errorf("%s: closed with %d, want %d", tc.name, code, tc.code)
		}
		conn.Close()
	}

	// A third connection for one user is refused.
	g.login(t, "carol", "1")
	g.login(t, "carol", "2")
	conn, _, err = g.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.WriteJSON(map[string]any{"op": "auth", "token": token(t, "carol"), "device": "3"})
	if code := closeCode(t, conn); code != connector.CloseTooMany {
		t.Errorf("third connection closed with %d, want %d", code, connector.CloseTooMany)
	}

	// Flooding: rate_limited errors, then 4008; other clients are unaffected.
	bystander := g.login(t, "dave", "1")
	flood := g.login(t, "erin", "1")
	limited := 0
	for i := 0; i < 100; i++ {
		if err := flood.conn.WriteJSON(map[string]any{"op": "ping", "id": fmt.Sprint(i)}); err != nil {
			break
		}
	}
	_ = flood.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	code := 0
	for {
		var r map[string]any
		if err := flood.conn.ReadJSON(&r); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			break
		}
		if r["code"] == "rate_limited" {
			limited++
		}
	}
	if limited == 0 || code != connector.ClosePolicy {
		t.Errorf("flooding: %d rate_limited errors, closed with %d; want some and %d", limited, code, connector.ClosePolicy)
	}
	if r := bystander.call(map[string]any{"op": "ping", "id": "b"}); r["op"] != "pong" {
		t.Errorf("bystander: %v", r)
	}
}

func TestGatewaySlowConsumer(t *testing.T) {
	// 4003 comes once the writer is stuck for WriteTimeout/4, before the
	// write itself times out.
	g := newGateway(t, connector.GatewayConfig{QueueFrames: 4, RatePerSecond: 1e6, RateBurst: 1e6, WriteTimeout: 4 * time.Second})
	slow := g.login(t, "slow", "1")
	// Large pongs the client never reads fill the socket buffers, then the
	// queue.
	id := strings.Repeat("x", 60<<10)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_ = slow.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if err := slow.conn.WriteJSON(map[string]any{"op": "ping", "id": id}); err != nil {
			break
		}
		if g.g.Closes(connector.CloseSlowConsumer) > 0 {
			break
		}
	}
	t.Logf("client stopped writing after %v", 30*time.Second-time.Until(deadline))
	// The close frame sits behind the backlog the client never read, so it
	// may or may not get through: the gateway's count says what it did.
	eventually(t, "one slow-consumer close", func() bool { return g.g.Closes(connector.CloseSlowConsumer) == 1 })
	other := g.login(t, "other", "1")
	if r := other.call(map[string]any{"op": "ping", "id": "o"}); r["op"] != "pong" {
		t.Fatalf("other client: %v", r)
	}
}

// TestGatewayWriteTimeout: the write deadline moves on while a client
// reads, however long it stays; a client that stops reading while its
// queue stays short of QueueFrames is ended by it: the write stuck on its
// full socket fails after WriteTimeout (1 to 1.25 times it), and the
// session closes as abnormal.
func TestGatewayWriteTimeout(t *testing.T) {
	const timeout = 250 * time.Millisecond
	g := newGateway(t, connector.GatewayConfig{QueueFrames: 1 << 20, RatePerSecond: 1e6, RateBurst: 1e6, WriteTimeout: timeout})
	// A client that reads, for six write timeouts.
	healthy := g.login(t, "healthy", "1")
	tick := time.NewTicker(timeout / 5)
	defer tick.Stop()
	for i := range 30 {
		if r := healthy.call(map[string]any{"op": "ping", "id": fmt.Sprint(i)}); r["op"] != "pong" {
			t.Fatalf("ping %d: %v", i, r)
		}
		<-tick.C
	}
	if n := g.g.Closes(1006); n != 0 {
		t.Fatalf("%d sessions ended by a failed write while their clients read", n)
	}
	// A client that stops reading: 200 pongs of 60 KiB (12 MiB, under the
	// 16 MiB byte bound) overfill its socket buffers.
	stuck := g.login(t, "stuck", "1")
	id := strings.Repeat("x", 60<<10)
	for i := range 200 {
		_ = stuck.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if err := stuck.conn.WriteJSON(map[string]any{"op": "ping", "id": id}); err != nil {
			t.Logf("the stuck client's ping %d: %v", i, err)
			break
		}
	}
	eventually(t, "the stuck write to end the session", func() bool { return g.g.Closes(1006) == 1 })
	if n := g.g.Closes(connector.CloseSlowConsumer); n != 0 {
		t.Fatalf("%d slow-consumer closes; the write timeout should end it", n)
	}
	if r := healthy.call(map[string]any{"op": "ping", "id": "after"}); r["op"] != "pong" {
		t.Fatalf("the reading client after: %v", r)
	}
}

// TestGatewayLiveness: WebSocket pings keep an idle connection open; junk
// frames count against the rate limit like any other.
func TestGatewayLiveness(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{IdleTimeout: time.Second, RatePerSecond: 5, RateBurst: 5, MaxStrikes: 10})
	c := g.login(t, "alice", "1")
	// 2 s of WebSocket pings, one every 200 ms: twice the idle timeout.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for range 10 {
		if err := c.conn.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	if r := c.call(map[string]any{"op": "ping", "id": "still"}); r["op"] != "pong" {
		t.Fatalf("after WebSocket pings: %v", r)
	}
	junk := g.login(t, "bob", "1")
	for i := 0; i < 100; i++ {
		if err := junk.conn.WriteMessage(websocket.TextMessage, []byte("{not json")); err != nil {
			break
		}
	}
	if code := closeCode(t, junk.conn); code != connector.ClosePolicy {
		t.Fatalf("a flood of junk frames closed with %d, want %d", code, connector.ClosePolicy)
	}
}

// TestGatewayWebSocketFrames: the session reads WebSocket frames itself:
// a request in fragments with a ping between them is one request, and the
// ping is answered; a frame that breaks the protocol closes with 1002; the
// client's close frame is answered with 1000.
func TestGatewayWebSocketFrames(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{})
	raw := func(c *client, masked bool, frames ...ws.Frame) {
		t.Helper()
		for _, f := range frames {
			if masked {
				f = ws.MaskFrame(f)
			}
			if err := ws.WriteFrame(c.conn.UnderlyingConn(), f); err != nil {
				t.Fatal(err)
			}
		}
	}

	alice := g.login(t, "alice", "1")
	pongs := make(chan string, 1)
	alice.conn.SetPongHandler(func(p string) error { pongs <- p; return nil })
	raw(alice, true,
		ws.NewFrame(ws.OpText, false, []byte(`{"op":"ping",`)),
		ws.NewPingFrame([]byte("between")),
		ws.NewFrame(ws.OpContinuation, true, []byte(`"id":"frag"}`)))
	if r := alice.read(); r["op"] != "pong" || r["id"] != "frag" {
		t.Fatalf("a fragmented request: %v", r)
	}
	select {
	case p := <-pongs:
		if p != "between" {
			t.Fatalf("pong %q", p)
		}
	default:
		t.Fatal("the ping between the fragments was not answered before the reply")
	}

	bob := g.login(t, "bob", "1")
	raw(bob, false, ws.NewTextFrame([]byte(`{"op":"ping","id":"p"}`)))
	if code := closeCode(t, bob.conn); code != connector.CloseProtocolError {
		t.Fatalf("an unmasked frame: close %d, want %d", code, connector.CloseProtocolError)
	}

	carol := g.login(t, "carol", "1")
	if err := carol.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, carol.conn); code != connector.CloseNormal {
		t.Fatalf("the answer to the client's close: %d, want %d", code, connector.CloseNormal)
	}
	if r := alice.call(map[string]any{"op": "ping", "id": "still"}); r["op"] != "pong" {
		t.Fatalf("another session after those: %v", r)
	}
}

// TestGatewayQuietSessionsHoldNoBuffer: a session holds a read buffer
// only while it reads (here, a frame cut in two); once its client is quiet
// it holds none.
func TestGatewayQuietSessionsHoldNoBuffer(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{})
	before := connector.ReadBuffersHeld()
	var clients []*client
	for i := range 20 {
		c := g.login(t, fmt.Sprint("user", i), "1")
		if r := c.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
			t.Fatalf("ping: %v", r)
		}
		clients = append(clients, c)
	}
	eventually(t, "quiet sessions hold no read buffer", func() bool { return connector.ReadBuffersHeld() == before })

	// Half a frame: the session holds a buffer until the rest comes.
	f, err := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{"op":"ping","id":"half"}`))))
	if err != nil {
		t.Fatal(err)
	}
	c := clients[0]
	if _, err := c.conn.UnderlyingConn().Write(f[:5]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a buffer for the half frame", func() bool { return connector.ReadBuffersHeld() == before+1 })
	if _, err := c.conn.UnderlyingConn().Write(f[5:]); err != nil {
		t.Fatal(err)
	}
	if r := c.read(); r["op"] != "pong" || r["id"] != "half" {
		t.Fatalf("the frame sent in two parts: %v", r)
	}
	eventually(t, "quiet again", func() bool { return connector.ReadBuffersHeld() == before })
}

// eventually polls cond until it holds, failing the test after 30s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, cond)
}

// TestGatewaySync: sync lists the user's conversations with the unread
// count of each (messages by others after the read cursor), and read moves
// it.
func TestGatewaySync(t *testing.T) {
	// The waits below poll with sync every 10 ms: the default rate (20/s,
	// burst 40) would refuse them once the writer takes over 2 s.
	g := newGateway(t, connector.GatewayConfig{RatePerSecond: 1000, RateBurst: 1000})
	alice, bob := g.login(t, "alice", "phone"), g.login(t, "bob", "phone")
	group := alice.call(map[string]any{"op": "create", "id": "c", "kind": "group", "members": []string{"bob"}, "title": "team"})["conv"].(string)
	dm := alice.call(map[string]any{"op": "create", "id": "d", "kind": "direct", "members": []string{"bob"}})["conv"].(string)
	var last float64
	for i := range 3 {
		last = bob.call(map[string]any{"op": "send", "id": fmt.Sprint("b", i), "conv": group, "cmid": fmt.Sprint("b", i), "body": i})["seq"].(float64)
	}
	for i := range 2 {
		last = alice.call(map[string]any{"op": "send", "id": fmt.Sprint("a", i), "conv": group, "cmid": fmt.Sprint("a", i), "body": i})["seq"].(float64)
	}
	byConv := func(c *client) map[string]map[string]any {
		r := c.call(map[string]any{"op": "sync", "id": "s"})
		if r["op"] != "sync_ok" {
			t.Fatalf("sync: %v", r)
		}
		out := map[string]map[string]any{}
		for _, e := range r["convs"].([]any) {
			m := e.(map[string]any)
			out[m["conv"].(string)] = m
		}
		return out
	}
	eventually(t, "the writer to store the messages", func() bool { return byConv(alice)[group]["last_seq"] == last })
	a := byConv(alice)
	if len(a) != 2 || a[group]["kind"] != "group" || a[group]["title"] != "team" || a[group]["unread"] != 3.0 || a[group]["read_seq"] != 1.0 ||
		a[dm]["kind"] != "direct" || a[dm]["unread"] != 0.0 {
		t.Fatalf("alice's sync: %v", a)
	}
	if b := byConv(bob); b[group]["unread"] != 2.0 {
		t.Fatalf("bob's sync: %v", b)
	}
	if r := alice.call(map[string]any{"op": "read", "id": "r", "conv": group, "seq": last}); r["op"] != "ok" {
		t.Fatalf("read: %v", r)
	}
	eventually(t, "the read to reach the store", func() bool { return byConv(alice)[group]["unread"] == 0.0 })
	if a := byConv(alice); a[group]["read_seq"] != last {
		t.Fatalf("after the read: %v", a[group])
	}
	if c := byConv(g.login(t, "carol", "x")); len(c) != 0 {
		t.Fatalf("carol's sync: %v", c)
	}
}

// TestGatewayRemovedMember: a member removed at seq N reads up to N and is
// refused after it; re-added, they read on.
func TestGatewayRemovedMember(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{RatePerSecond: 1000, RateBurst: 1000}) // the waits poll every 10 ms
	alice, bob := g.login(t, "alice", "phone"), g.login(t, "bob", "phone")
	conv := alice.call(map[string]any{"op": "create", "id": "c", "kind": "group", "members": []string{"bob"}})["conv"].(string)
	send := func(cmid string) float64 {
		r := alice.call(map[string]any{"op": "send", "id": cmid, "conv": conv, "cmid": cmid, "body": cmid})
		if r["op"] != "ack" {
			t.Fatalf("send: %v", r)
		}
		return r["seq"].(float64)
	}
	send("m1")
	send("m2")
	if r := alice.call(map[string]any{"op": "members", "id": "rm", "conv": conv, "remove": []string{"bob"}}); r["op"] != "ok" {
		t.Fatalf("remove: %v", r)
	}
	removedAt := 4.0 // created, m1, m2, removal
	last := send("m3")
	history := func(c *client, after float64) map[string]any {
		return c.call(map[string]any{"op": "history", "id": "h", "conv": conv, "after": after, "limit": 100})
	}
	eventually(t, "the writer to store m3", func() bool {
		evs, _ := history(alice, 0)["events"].([]any)
		return len(evs) == int(last)
	})
	h := history(bob, 0)
	evs, _ := h["events"].([]any)
	if len(evs) != int(removedAt) || h["more"] != false || evs[len(evs)-1].(map[string]any)["type"] != "member_removed" {
		t.Fatalf("bob's history after his removal: %v", h)
	}
	// A page that ends at the removal says there is no more.
	if r := bob.call(map[string]any{"op": "history", "id": "h4", "conv": conv, "after": 0, "limit": removedAt}); len(r["events"].([]any)) != int(removedAt) || r["more"] != false {
		t.Fatalf("bob's page up to his removal: %v", r)
	}
	if r := history(bob, removedAt); r["code"] != "forbidden" {
		t.Fatalf("bob reading after his removal: %v", r)
	}
	if r := bob.call(map[string]any{"op": "history", "id": "b", "conv": conv, "before": 100}); len(r["events"].([]any)) != int(removedAt) {
		t.Fatalf("bob's backward page: %v", r)
	}
	if r := alice.call(map[string]any{"op": "members", "id": "add", "conv": conv, "add": []string{"bob"}}); r["op"] != "ok" {
		t.Fatalf("re-add: %v", r)
	}
	eventually(t, "bob to read on once re-added", func() bool {
		r := history(bob, removedAt)
		evs, _ := r["events"].([]any)
		return r["op"] == "history_ok" && len(evs) == int(last-removedAt)+1 // m3 and his re-addition
	})
}

// TestGatewayHistoryPagesBySize: pages of large events stop at about 1 MiB,
// cut on the side being paged towards, so paging either way finds every
// event once.
func TestGatewayHistoryPagesBySize(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{RatePerSecond: 1000, RateBurst: 1000})
	alice := g.login(t, "alice", "phone")
	conv := alice.call(map[string]any{"op": "create", "id": "c", "kind": "direct", "members": []string{"bob"}})["conv"].(string)
	big := strings.Repeat("x", 60<<10)
	const n = 41 // created + 40 messages of 60 KiB
	for i := range n - 1 {
		if r := alice.call(map[string]any{"op": "send", "id": fmt.Sprint(i), "conv": conv, "cmid": fmt.Sprint(i), "body": big}); r["op"] != "ack" {
			t.Fatalf("send: %v", r)
		}
	}
	// page returns a page's seqs and whether there are more, or the reply
	// if it is not a page (the store may not have the conversation yet).
	page := func(dir string, at float64) ([]float64, bool, map[string]any) {
		r := alice.call(map[string]any{"op": "history", "id": "h", "conv": conv, dir: at, "limit": 1000})
		evs, ok := r["events"].([]any)
		if r["op"] != "history_ok" || !ok {
			return nil, false, r
		}
		var seqs []float64
		for _, e := range evs {
			seqs = append(seqs, e.(map[string]any)["seq"].(float64))
		}
		return seqs, r["more"] == true, nil
	}
	eventually(t, "the writer to store every message", func() bool {
		s, _, notPage := page("before", n+1)
		return notPage == nil && len(s) > 0 && s[len(s)-1] == n
	})
	var forward, backward []float64
	pages := 0
	for after, more := 0.0, true; more; pages++ {
		s, m, notPage := page("after", after)
		if notPage != nil || len(s) == 0 {
			t.Fatalf("history after %v: %v", after, notPage)
		}
		forward, after, more = append(forward, s...), s[len(s)-1], m
	}
	for before, more := float64(n+1), true; more; {
		s, m, notPage := page("before", before)
		if notPage != nil || len(s) == 0 {
			t.Fatalf("history before %v: %v", before, notPage)
		}
		backward, before, more = append(s, backward...), s[0], m
	}
	if pages < 3 || len(forward) != n || fmt.Sprint(forward) != fmt.Sprint(backward) {
		t.Fatalf("%d forward pages; forward %v; backward %v", pages, forward, backward)
	}
}
