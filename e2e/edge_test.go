package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/writer"
)

// edge is a whole pipeline in this process over one embedded broker:
// sequencer, writer into Pebble, fanout, and one connector node whose
// Kafka connections go through dial (for fault injection).
type edge struct {
	c     *cluster
	addr  string
	g     *connector.Gateway
	store store.Store
}

func newEdge(t *testing.T, gcfg connector.GatewayConfig, ccfg connector.CommanderConfig, dial func(ctx context.Context, network, host string) (net.Conn, error)) *edge {
	t.Helper()
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	return newEdgeOn(t, st, gcfg, ccfg, dial)
}

// newEdgeOn is newEdge on the store st.
func newEdgeOn(t *testing.T, st store.Store, gcfg connector.GatewayConfig, ccfg connector.CommanderConfig, dial func(ctx context.Context, network, host string) (net.Conn, error)) *edge {
	t.Helper()
	c := newCluster(t)
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-edge").Run)
	w, err := writer.New(writer.Config{Kafka: c.kc, Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "writer", w.Run)
	f, err := fanout.New(fanout.Config{Kafka: c.kc, PushSecret: []byte(rtPushSecret), Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "fanout", f.Run)
	ccfg.Kafka = c.kc
	if ccfg.NodeID == "" {
		ccfg.NodeID = "edge-1"
	}
	ccfg.Kafka.Dial = dial
	ccfg.Logger = testLogger(t)
	cmd, err := connector.NewCommander(context.Background(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cmd.Close)
	gcfg.Listen, gcfg.TokenSecret = "127.0.0.1:0", []byte(rtTokenSecret)
	gcfg.PushListen, gcfg.PushSecret = "127.0.0.1:0", []byte(rtPushSecret)
	gcfg.DrainWindow, gcfg.Logger = 10*time.Millisecond, testLogger(t)
	g, err := connector.NewGateway(gcfg, cmd, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "connector", func(ctx context.Context) error { return connector.Serve(ctx, cmd, g) })
	waitFor(t, time.Minute, "fanout to see the node", func() bool { return f.NodeAlive(ccfg.NodeID) })
	return &edge{c: c, addr: g.Addr().String(), g: g, store: st}
}

// rawConn dials the node without authenticating.
func (e *edge) rawConn(t *testing.T, header http.Header, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: dial, HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.Dial(wsURL(e.addr), header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// authed dials and authenticates user; it answers nothing but the auth.
func (e *edge) authed(t *testing.T, user string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *websocket.Conn {
	t.Helper()
	conn := e.rawConn(t, nil, dial)
	tok, _ := auth.Sign([]byte(rtTokenSecret), user, time.Hour, time.Now())
	if err := conn.WriteJSON(map[string]any{"op": "auth", "id": "a", "token": tok, "device": "d"}); err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := conn.ReadJSON(&r); err != nil || r["op"] != "auth_ok" {
		t.Fatalf("auth of %s: %v %v", user, r, err)
	}
	return conn
}

// closedWith reads until the server closes conn and returns the code.
func closedWith(t *testing.T, conn *websocket.Conn) int {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
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

// readReply reads frames until the reply with id.
func readReply(t *testing.T, conn *websocket.Conn, id string) map[string]any {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var r map[string]any
		if err := conn.ReadJSON(&r); err != nil {
			t.Fatalf("waiting for reply %s: %v", id, err)
		}
		if r["id"] == id {
			return r
		}
	}
}

// TestAbuseHarmsNobodyElse: every kind of bad input gets its error or close
// code while honest members of the same conversation keep receiving every
// event, in order, through push.
func TestAbuseHarmsNobodyElse(t *testing.T) {
	e := newEdge(t, connector.GatewayConfig{
		AuthTimeout: time.Second, RatePerSecond: 20, RateBurst: 20, MaxStrikes: 20,
	}, connector.CommanderConfig{}, nil)
	alice := connect(t, "alice", "alice", "phone", nil, e.addr)
	carol := connect(t, "carol", "carol", "laptop", nil, e.addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conv, err := alice.c.Create(ctx, "group", []string{"carol", "slow"}, "under attack")
	if err != nil {
		t.Fatal(err)
	}
	// Honest traffic the whole time, from several connections (each has
	// its own rate limit), with bodies big enough to fill a slow reader.
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	body := strings.Repeat("x", 30<<10)
	for i := range 8 {
		sender := connect(t, fmt.Sprint("sender ", i), "alice", fmt.Sprint("s", i), nil, e.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := sender.c.SendCMID(ctx, conv, fmt.Sprintf("s%d-%d", i, n), "text", map[string]any{"pad": body})
				cancel()
				if err != nil {
					t.Errorf("honest send: %v", err)
					return
				}
				sent.Add(1)
			}
		}()
	}

	// A member that never reads, with a small receive buffer: 4003.
	slow := e.authed(t, "slow", func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		return c, err
	})
	waitFor(t, 2*time.Minute, "the slow reader to be closed", func() bool { return e.g.Closes(connector.CloseSlowConsumer) == 1 })
	_ = slow.Close()

	refusals := []struct {
		name string
		run  func(*websocket.Conn)
		code int
	}{
		{"bad token", func(c *websocket.Conn) {
			_ = c.WriteJSON(map[string]any{"op": "auth", "token": "forged", "device": "d"})
		}, connector.CloseBadToken},
		{"expired token", func(c *websocket.Conn) {
			tok, _ := auth.Sign([]byte(rtTokenSecret), "alice", time.Second, time.Now().Add(-time.Hour))
			_ = c.WriteJSON(map[string]any{"op": "auth", "token": tok, "device": "d"})
		}, connector.CloseBadToken},
		{"no auth in time", func(*websocket.Conn) {}, connector.CloseNoAuth},
		{"oversize frame", func(c *websocket.Conn) {
			_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"auth","token":"`+strings.Repeat("x", 70<<10)+`"}`))
		}, connector.CloseTooLarge},
	}
	for _, r := range refusals {
		conn := e.rawConn(t, nil, nil)
		r.run(conn)
		if code := closedWith(t, conn); code != r.code {
			t.Errorf("%s: closed with %d, want %d", r.name, code, r.code)
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if _, resp, err := d.Dial(wsURL(e.addr), http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a foreign Origin: %v, %v; want 403", resp, err)
	}

	// Bad frames get bad_request and the connection stays open; a
	// non-member is refused.
	mallory := e.authed(t, "mallory", nil)
	for i, frame := range []string{`{"op":`, `[1,2]`, `{"op":"dance","id":"x"}`} {
		if err := mallory.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := mallory.ReadJSON(&r); err != nil || r["code"] != "bad_request" {
			t.Fatalf("bad frame %d: %v %v", i, r, err)
		}
	}
	_ = mallory.WriteJSON(map[string]any{"op": "send", "id": "m", "conv": conv, "cmid": "evil", "body": "x"})
	if r := readReply(t, mallory, "m"); r["code"] != "forbidden" {
		t.Fatalf("a non-member's send: %v", r)
	}
	_ = mallory.WriteJSON(map[string]any{"op": "history", "id": "h", "conv": conv, "after": 0})
	if r := readReply(t, mallory, "h"); r["code"] != "forbidden" {
		t.Fatalf("a non-member's history: %v", r)
	}
	_ = mallory.WriteJSON(map[string]any{"op": "ping", "id": "p"})
	if r := readReply(t, mallory, "p"); r["op"] != "pong" {
		t.Fatalf("after bad input: %v", r)
	}

	// Flooding: rate_limited errors, then 4008.
	flood := e.authed(t, "flood", nil)
	go func() {
		for i := 0; ; i++ {
			if flood.WriteJSON(map[string]any{"op": "ping", "id": fmt.Sprint(i)}) != nil {
				return
			}
		}
	}()
	limited := 0
	_ = flood.SetReadDeadline(time.Now().Add(30 * time.Second))
	code := 0
	for {
		var r map[string]any
		err := flood.ReadJSON(&r)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			code = ce.Code
			break
		}
		if err != nil {
			t.Fatalf("flooding: %v", err)
		}
		if r["code"] == "rate_limited" {
			limited++
		}
	}
	if limited == 0 || code != connector.ClosePolicy {
		t.Fatalf("flooding: %d rate_limited, closed with %d; want some, then %d", limited, code, connector.ClosePolicy)
	}

	// Honest traffic went on throughout: the members have every event.
	close(stop)
	wg.Wait()
	head := int64(1) + sent.Load()
	t.Logf("%d honest messages while under attack", sent.Load())
	for _, d := range []*device{alice, carol} {
		d.upTo(conv, 0, head)
		if st := d.c.Stats(); st.Gaps != 0 || st.Connects != 1 {
			t.Errorf("%s was disturbed: %+v", d.name, st)
		}
	}
}

// TestKafkaUnreachableAtSend: the connector loses the log; a send gets
// unavailable, the client retries with the same cmid, and once the log is
// back exactly one message results.
func TestKafkaUnreachableAtSend(t *testing.T) {
	var down atomic.Bool
	var mu sync.Mutex
	var open []net.Conn
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		if down.Load() {
			return nil, errors.New("injected: the broker is unreachable")
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, host)
		if err == nil {
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
		}
		return c, err
	}
	cut := func() {
		down.Store(true)
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
		open = nil
	}
	e := newEdge(t, connector.GatewayConfig{}, connector.CommanderConfig{ReplyTimeout: 2 * time.Second}, dial)
	alice := connect(t, "alice", "alice", "phone", nil, e.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conv, err := alice.c.Create(ctx, "direct", []string{"bob"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.c.Send(ctx, conv, "text", "before"); err != nil {
		t.Fatal(err)
	}

	cut()
	// Straight through the wire protocol: the node answers unavailable.
	raw := e.authed(t, "alice", nil)
	_ = raw.WriteJSON(map[string]any{"op": "send", "id": "u", "conv": conv, "cmid": "during-outage", "body": "x"})
	if r := readReply(t, raw, "u"); r["op"] != "error" || r["code"] != "unavailable" {
		t.Fatalf("send with the log unreachable: %v", r)
	}
	// The client retries the same cmid until the log is back.
	type result struct {
		ack client.Ack
		err error
	}
	res := make(chan result, 1)
	go func() {
		ack, err := alice.c.SendCMID(ctx, conv, "during-outage", "text", "x")
		res <- result{ack, err}
	}()
	waitFor(t, time.Minute, "the client to retry", func() bool { return alice.c.Stats().Retries >= 2 })
	down.Store(false)
	r := <-res
	if r.err != nil {
		t.Fatalf("send after the log came back: %v", r.err)
	}
	// Exactly one message carries that cmid. Pushes can come before the
	// writer stores the event: the history is read once it has the seq.
	alice.upTo(conv, 0, r.ack.Seq)
	var evs []client.Event
	waitFor(t, time.Minute, "the store to hold the acked seq", func() bool {
		evs, _, err = alice.c.History(ctx, conv, 0, 0, 1000)
		return err == nil && len(evs) > 0 && evs[len(evs)-1].Seq >= r.ack.Seq
	})
	n := 0
	for _, ev := range evs {
		if ev.CMID == "during-outage" {
			n++
			if ev.Seq != r.ack.Seq {
				t.Fatalf("the message is seq %d, the ack says %d", ev.Seq, r.ack.Seq)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d messages with the retried cmid, want 1: %v", n, evs)
	}
}
