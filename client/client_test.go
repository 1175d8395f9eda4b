package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

var (
	secret     = []byte(strings.Repeat("s", 32))
	pushSecret = []byte(strings.Repeat("p", 16))
)

const wait = 20 * time.Second

// env is one cluster: an embedded broker, a sequencer, a writer into
// Pebble; nodes (a commander and a gateway each) are added with node.
type env struct {
	t             *testing.T
	kc            kafka.Config
	st            *pebblestore.Store
	stopSequencer func()
}

func newEnv(t *testing.T) *env {
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, kc: kafka.Config{Brokers: []string{b.Addr()}, Partitions: 4}.WithDefaults(), st: st}
	w, err := writer.New(writer.Config{Kafka: e.kc}, st)
	if err != nil {
		t.Fatal(err)
	}
	e.start(w.Run)
	e.stopSequencer = e.sequencer()
	return e
}

// start runs fn until stop is called or the test ends; stop waits for fn
// to return.
func (e *env) start(fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Error(err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) sequencer() (stop func()) {
	s, err := sequencer.New(sequencer.Config{Kafka: e.kc, NodeID: "seq"})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.start(s.Run)
}

// node is one connector node.
type node struct {
	url  string // its WebSocket endpoint
	push string // its push endpoint's address
	stop func() // drains it (4009) and waits until it stopped
}

func (e *env) node(id string, opts ...func(*connector.GatewayConfig)) *node {
	c, err := connector.NewCommander(context.Background(), connector.CommanderConfig{Kafka: e.kc, NodeID: id})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	e.start(c.Run)
	<-c.Ready()
	cfg := connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: secret,
		PushListen: "127.0.0.1:0", PushSecret: pushSecret, DrainWindow: 50 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	g, err := connector.NewGateway(cfg, c, e.st)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		e.t.Fatal(err)
	}
	return &node{url: "ws://" + g.Addr().String() + "/v1/ws", push: g.PushAddr().String(), stop: e.start(g.Run)}
}

// stored waits until the store holds the given seqs of conv and returns
// those events.
func (e *env) stored(conv string, seqs ...int64) []*parleyv1.Event {
	e.t.Helper()
	var out []*parleyv1.Event
	testutil.WaitFor(e.t, wait, "the writer to store the events", func() bool {
		evs, _, err := e.st.Events(context.Background(), conv, store.Range{Limit: store.MaxRangeLimit})
		if err != nil {
			e.t.Fatal(err)
		}
		out = out[:0]
		for _, ev := range evs {
			if slices.Contains(seqs, ev.Seq) {
				out = append(out, ev)
			}
		}
		return len(out) == len(seqs)
	})
	return out
}

// push plays fanout: it posts the stored events seqs of conv, in that
// order, to n's push endpoint for users.
func (e *env) push(n *node, conv string, users []string, seqs ...int64) {
	e.t.Helper()
	evs := e.stored(conv, seqs...)
	batch := &parleyv1.PushBatch{From: "test"}
	for _, seq := range seqs {
		for _, ev := range evs {
			if ev.Seq == seq {
				batch.Pushes = append(batch.Pushes, &parleyv1.Push{Event: ev, Users: users})
			}
		}
	}
	body, err := proto.Marshal(batch)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+n.push+connector.PushPath, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(connector.PushSecretHeader, string(pushSecret))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("push: HTTP %d", resp.StatusCode)
	}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func config(t *testing.T, user string, urls ...string) client.Config {
	return client.Config{
		URLs:           urls,
		Token:          func(context.Context) (string, error) { return auth.Sign(secret, user, time.Hour, time.Now()) },
		Device:         "dev-1",
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		RequestTimeout: 10 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func dial(t *testing.T, user string, urls ...string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := client.Dial(ctx, config(t, user, urls...))
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// collector keeps what a client's Events delivers.
type collector struct {
	mu  sync.Mutex
	evs []client.Event
}

func collect(c *client.Client) *collector { return collectAfter(c, nil) }

// collectAfter starts reading Events once gate is closed (nil: at once).
func collectAfter(c *client.Client, gate chan struct{}) *collector {
	k := &collector{}
	go func() {
		if gate != nil {
			<-gate
		}
		for ev := range c.Events() {
			k.mu.Lock()
			k.evs = append(k.evs, ev)
			k.mu.Unlock()
		}
	}()
	return k
}

// seqs returns the seqs delivered for conv, in delivery order.
func (k *collector) seqs(conv string) []int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []int64
	for _, ev := range k.evs {
		if ev.Conv == conv {
			out = append(out, ev.Seq)
		}
	}
	return out
}

// waitSeqs waits until at least n events of conv were delivered, then
// requires them to be exactly 1, 2, 3, ... (in order, none twice, none
// missing).
func (k *collector) waitSeqs(t *testing.T, conv string, n int64) {
	t.Helper()
	testutil.WaitFor(t, wait, "the events to be delivered", func() bool { return len(k.seqs(conv)) >= int(n) })
	if got := k.seqs(conv); !slices.Equal(got, seqRange(1, int64(len(got)))) {
		t.Fatalf("delivered seqs %v, want 1, 2, 3, ...", got)
	}
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// TestRequests: send and ack, a repeated cmid, the other commands, and
// refusals that return at once.
func TestRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node("node-1")
	ctx := bg(t)

	_, err := client.Dial(ctx, client.Config{URLs: []string{n.url}, Device: "d",
		Token: func(context.Context) (string, error) { return "not-a-token", nil }})
	if !client.IsClose(err, client.CloseBadToken) {
		t.Fatalf("dial with a bad token: %v, want close %d", err, client.CloseBadToken)
	}

	alice := dial(t, "alice", n.url)
	if alice.User() != "alice" || alice.Node() != "node-1" {
		t.Fatalf("user %q node %q", alice.User(), alice.Node())
	}
	if err := alice.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	conv, err := alice.Create(ctx, "group", []string{"bob"}, "team")
	if err != nil || conv == "" {
		t.Fatalf("create: %q %v", conv, err)
	}
	ack, err := alice.SendCMID(ctx, conv, "m-1", "text", map[string]string{"text": "hi"})
	if err != nil || ack.Seq != 2 || ack.CMID != "m-1" || ack.Conv != conv || ack.MsgID == "" {
		t.Fatalf("send: %+v %v", ack, err)
	}
	again, err := alice.SendCMID(ctx, conv, "m-1", "text", map[string]string{"text": "hi"})
	if err != nil || again != ack {
		t.Fatalf("repeated cmid: %+v %v, want the original %+v", again, err, ack)
	}
	auto, err := alice.Send(ctx, conv, "", json.RawMessage(`"plain"`))
	if err != nil || auto.Seq != 3 || auto.CMID == "" || auto.CMID == "m-1" {
		t.Fatalf("send with a generated cmid: %+v %v", auto, err)
	}
	edit, err := alice.Edit(ctx, conv, "", 2, map[string]string{"text": "hello"})
	if err != nil || edit.Seq != 4 {
		t.Fatalf("edit: %+v %v", edit, err)
	}
	if err := alice.Members(ctx, conv, []string{"carol"}, nil); err != nil {
		t.Fatalf("members: %v", err)
	}
	if err := alice.Read(ctx, conv, 5); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := alice.Typing(conv); err != nil {
		t.Fatalf("typing: %v", err)
	}
	var evs []client.Event
	testutil.WaitFor(t, wait, "the history to hold 6 events", func() bool {
		evs, _, err = alice.History(ctx, conv, 0, 0, 100)
		return err == nil && len(evs) == 6
	})
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if want := []string{"created", "message", "message", "edit", "member_added", "read"}; !slices.Equal(types, want) {
		t.Fatalf("history types %v, want %v", types, want)
	}
	if evs[1].MsgID != ack.MsgID || string(evs[1].Body) != `{"text":"hi"}` || evs[3].Target != 2 {
		t.Fatalf("history %+v", evs)
	}
	page, more, err := alice.History(ctx, conv, 0, 4, 2)
	if err != nil || !more || len(page) != 2 || page[0].Seq != 2 || page[1].Seq != 3 {
		t.Fatalf("history before 4: %+v more=%v %v", page, more, err)
	}
	// A client that holds seqs up to 2 gets the rest from history at
	// once, without any push.
	cfg := config(t, "alice", n.url)
	cfg.Device, cfg.Tracked = "dev-2", map[string]int64{conv: 2}
	resumed, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	got := collect(resumed)
	testutil.WaitFor(t, wait, "seqs 3..6", func() bool { return len(got.seqs(conv)) >= 4 })
	if s := got.seqs(conv); !slices.Equal(s, seqRange(3, 6)) {
		t.Fatalf("resumed after 2: delivered %v", s)
	}

	mallory := dial(t, "mallory", n.url)
	before := mallory.Stats()
	_, err = mallory.Send(ctx, conv, "text", "let me in")
	var perr *client.Error
	if !errors.As(err, &perr) || perr.Code != client.CodeForbidden || !errors.Is(err, client.ErrForbidden) || !client.IsCode(err, "forbidden") {
		t.Fatalf("non-member send: %v, want forbidden", err)
	}
	if after := mallory.Stats(); after.Requests != before.Requests+1 || after.Retries != before.Retries {
		t.Fatalf("forbidden took %d attempts and %d retries, want 1 and 0", after.Requests-before.Requests, after.Retries-before.Retries)
	}
	_, err = alice.Send(ctx, conv, "text", strings.Repeat("x", 70<<10))
	if !client.IsCode(err, client.CodeTooLarge) {
		t.Fatalf("oversize send: %v, want too_large", err)
	}
	if err := alice.Ping(ctx); err != nil {
		t.Fatalf("after the refusals: %v", err)
	}
}

// TestGapFill: pushes 1, 2, then 5 deliver 1..5 in order, the missing 3
// and 4 from history; a repeated push is dropped; a push for a
// conversation not tracked yet starts it there.
func TestGapFill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node("node-1")
	ctx := bg(t)
	alice, bob := dial(t, "alice", n.url), dial(t, "bob", n.url)
	got := collect(alice)
	conv, err := bob.Create(ctx, "group", []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := bob.Send(ctx, conv, "text", "x"); err != nil {
			t.Fatal(err)
		}
	}
	to := []string{"alice"}
	e.push(n, conv, to, 1, 2)
	got.waitSeqs(t, conv, 2)
	e.push(n, conv, to, 5) // 3 and 4 are in the store, never pushed
	got.waitSeqs(t, conv, 5)
	st := alice.Stats()
	if st.Gaps != 1 || st.HistoryPages == 0 {
		t.Fatalf("stats %+v, want one gap filled from history", st)
	}
	e.push(n, conv, to, 2) // a duplicate
	if _, err := bob.Send(ctx, conv, "text", "y"); err != nil {
		t.Fatal(err)
	}
	e.push(n, conv, to, 6)
	got.waitSeqs(t, conv, 6)
	if d := alice.Stats().Duplicates - st.Duplicates; d != 1 {
		t.Fatalf("%d more duplicates dropped, want 1", d)
	}

	// Not tracked: the first push starts it, nothing earlier is fetched.
	other, err := bob.Create(ctx, "group", []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := bob.Send(ctx, other, "text", "z"); err != nil {
			t.Fatal(err)
		}
	}
	e.push(n, other, to, 3, 4)
	testutil.WaitFor(t, wait, "seqs 3 and 4", func() bool { return len(got.seqs(other)) == 2 })
	if s := got.seqs(other); !slices.Equal(s, []int64{3, 4}) {
		t.Fatalf("untracked conversation: delivered %v, want [3 4]", s)
	}
	if s := got.seqs(conv); !slices.Equal(s, seqRange(1, 6)) {
		t.Fatalf("first conversation: %v", s)
	}
}

// TestLateCatchUp: a while after connecting, the client catches up again
// the conversations no push came for since (an event the store took after
// the first catch-up, never pushed, arrives), and not those a push came
// for.
func TestLateCatchUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node("node-1")
	ctx := bg(t)
	bob := dial(t, "bob", n.url)
	quiet, err := bob.Create(ctx, "group", []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	busy, err := bob.Create(ctx, "group", []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	e.stored(quiet, 1)
	e.stored(busy, 1)
	cfg := config(t, "alice", n.url)
	cfg.Tracked = map[string]int64{quiet: 0, busy: 0}
	late := make(chan struct{})
	client.SetLateCatchUp(&cfg, late)
	alice, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })
	got := collect(alice)
	got.waitSeqs(t, quiet, 1) // the first catch-up
	got.waitSeqs(t, busy, 1)
	pages := alice.Stats().HistoryPages

	for _, conv := range []string{quiet, busy} {
		if _, err := bob.Send(ctx, conv, "text", "x"); err != nil {
			t.Fatal(err)
		}
	}
	e.push(n, busy, []string{"alice"}, 2)
	got.waitSeqs(t, busy, 2)
	e.stored(quiet, 2) // stored, never pushed
	close(late)
	got.waitSeqs(t, quiet, 2)
	if p := alice.Stats().HistoryPages - pages; p != 1 {
		t.Fatalf("the late catch-up fetched %d history pages, want 1 (the quiet conversation's)", p)
	}
	if s := got.seqs(busy); !slices.Equal(s, []int64{1, 2}) {
		t.Fatalf("busy conversation: %v", s)
	}
}

// TestReconnectAfterDrain: the client's node drains while another client
// sends; the client reconnects to the other node, catches up from history,
// and Events has every seq once, in order.
func TestReconnectAfterDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.node("node-a"), e.node("node-b")
	ctx := bg(t)
	alice := dial(t, "alice", a.url, b.url)
	bob := dial(t, "bob", b.url)
	if alice.Node() != "node-a" {
		t.Fatalf("alice on %q", alice.Node())
	}
	got := collect(alice)
	conv, err := bob.Create(ctx, "group", []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	send := func(n int) {
		for range n {
			if _, err := bob.Send(ctx, conv, "text", "x"); err != nil {
				t.Error(err)
				return
			}
		}
	}
	send(2)
	to := []string{"alice"}
	e.push(a, conv, to, 1, 2, 3)
	got.waitSeqs(t, conv, 3)

	// 4..6 are stored but never pushed: only the catch-up after the
	// reconnect can bring them.
	send(3)
	e.stored(conv, 6)
	sent := make(chan struct{})
	go func() { defer close(sent); send(3) }() // 7..9, during the drain
	a.stop()
	testutil.WaitFor(t, wait, "alice to reconnect to node-b", func() bool { return alice.Node() == "node-b" })
	got.waitSeqs(t, conv, 6)
	<-sent
	send(1) // 10
	e.push(b, conv, to, 5, 10)
	got.waitSeqs(t, conv, 10)
	if s := got.seqs(conv); len(s) != 10 {
		t.Fatalf("delivered %v, want 1..10", s)
	}
	if st := alice.Stats(); st.Connects != 2 {
		t.Fatalf("stats %+v, want 2 connections", st)
	}
}

// proxy forwards TCP connections to a target until killed, which cuts
// them all at once, like a node dying.
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	killed bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.killed {
				p.mu.Unlock()
				c.Close()
				s.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *proxy) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killed = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestSendDuringOutage: a send written to a node that dies before it
// answers (the sequencer is down, so no outcome comes) is retried with the
// same cmid on the other node and returns once that succeeds; exactly one
// message exists.
func TestSendDuringOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.node("node-a"), e.node("node-b")
	p := newProxy(t, strings.TrimSuffix(strings.TrimPrefix(a.url, "ws://"), "/v1/ws"))
	ctx := bg(t)
	alice := dial(t, "alice", "ws://"+p.ln.Addr().String()+"/v1/ws", b.url)
	conv, err := alice.Create(ctx, "group", []string{"bob"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, conv, "text", "before"); err != nil {
		t.Fatal(err)
	}
	e.stopSequencer()
	before := alice.Stats()
	type result struct {
		ack client.Ack
		err error
	}
	res := make(chan result, 1)
	go func() {
		ack, err := alice.SendCMID(ctx, conv, "outage-1", "text", "during the outage")
		res <- result{ack, err}
	}()
	// Once node-a put the command in the log, it dies.
	testutil.WaitFor(t, wait, "the command in the log", func() bool {
		found := false
		err := kafka.ReadToEnd(ctx, e.kc.ClientOpts(), e.kc.Topics().Commands, nil, func(r *kgo.Record) error {
			var c parleyv1.Command
			if proto.Unmarshal(r.Value, &c) == nil && c.Cmid == "outage-1" {
				found = true
			}
			return nil
		})
		return err == nil && found
	})
	select {
	case r := <-res:
		t.Fatalf("the send returned while nothing could sequence it: %+v", r)
	default:
	}
	p.kill()
	testutil.WaitFor(t, wait, "alice to reconnect to node-b", func() bool { return alice.Node() == "node-b" })
	e.sequencer()
	r := <-res
	if r.err != nil || r.ack.Seq != 3 || r.ack.CMID != "outage-1" {
		t.Fatalf("send during the outage: %+v %v", r.ack, r.err)
	}
	if st := alice.Stats(); st.Retries <= before.Retries || st.Requests < before.Requests+2 {
		t.Fatalf("stats %+v (before %+v): want a retry", st, before)
	}
	var evs []client.Event
	var more bool
	testutil.WaitFor(t, wait, "the history to hold the message", func() bool {
		evs, more, err = alice.History(ctx, conv, 0, 0, 100)
		return err == nil && len(evs) >= 3
	})
	n := 0
	for _, ev := range evs {
		if ev.CMID == "outage-1" {
			n++
			if ev.MsgID != r.ack.MsgID || ev.Seq != 3 {
				t.Fatalf("the message %+v, the ack %+v", ev, r.ack)
			}
		}
	}
	if n != 1 || len(evs) != 3 || more {
		t.Fatalf("%d events with the cmid, %d events in all (more=%v), want 1 and 3", n, len(evs), more)
	}
}

// TestKeepalive: a quiet client pings, so the server's idle timeout does
// not close its connection.
func TestKeepalive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The idle timeout is six ping intervals: a ping comes every 250 to 375
	// ms, and the keepalive may be held up by over a second (a loaded
	// machine running the suite) before the server gives the connection
	// up. The client gives up a connection that received nothing for three
	// intervals and a quarter (812 ms here; a pong answers each ping).
	n := e.node("node-1", func(c *connector.GatewayConfig) { c.IdleTimeout = 1500 * time.Millisecond })
	cfg := config(t, "alice", n.url)
	cfg.PingInterval = 250 * time.Millisecond
	c, err := client.Dial(bg(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Twelve pings take at least twice the idle timeout.
	testutil.WaitFor(t, wait, "twelve keepalive pings", func() bool { return c.Stats().Pings >= 12 })
	if st := c.Stats(); st.Connects != 1 {
		t.Fatalf("stats %+v: the idle connection was closed", st)
	}
}

// TestRefusedForGood: when reconnects are refused (the token went bad),
// the client stops: Done, Err, Events closed, calls fail.
func TestRefusedForGood(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.node("node-a"), e.node("node-b")
	var bad atomic.Bool
	cfg := config(t, "alice", a.url, b.url)
	good := cfg.Token
	cfg.Token = func(ctx context.Context) (string, error) {
		if bad.Load() {
			return "expired", nil
		}
		return good(ctx)
	}
	c, err := client.Dial(bg(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bad.Store(true)
	a.stop()
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("the client did not stop")
	}
	if !client.IsClose(c.Err(), client.CloseBadToken) {
		t.Fatalf("Err() = %v, want close %d", c.Err(), client.CloseBadToken)
	}
	if _, err := c.Send(bg(t), "x", "text", 1); !client.IsClose(err, client.CloseBadToken) {
		t.Fatalf("send after the stop: %v", err)
	}
	for range c.Events() { // closed
	}
}

// TestQueueOverflow: pushes that arrive while the application does not
// read and the delivery queue is full are dropped and recovered from
// history: Events still has every seq once, in order.
func TestQueueOverflow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node("node-1")
	ctx := bg(t)
	cfg := config(t, "alice", n.url)
	cfg.EventBuffer = 1
	client.SetQueueLimit(&cfg, 4)
	alice, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	gate := make(chan struct{})
	got := collectAfter(alice, gate)
	bob := dial(t, "bob", n.url)
	conv, err := bob.Create(ctx, "group", []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for range 19 {
		if _, err := bob.Send(ctx, conv, "text", "x"); err != nil {
			t.Fatal(err)
		}
	}
	e.push(n, conv, []string{"alice"}, seqRange(1, 20)...)
	testutil.WaitFor(t, wait, "the queue to overflow", func() bool { return alice.Stats().Overflows > 0 })
	close(gate)
	got.waitSeqs(t, conv, 20)
	if s := got.seqs(conv); len(s) != 20 {
		t.Fatalf("delivered %v", s)
	}
}
