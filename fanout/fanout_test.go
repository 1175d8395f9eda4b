package fanout_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/writer"
)

var (
	tokenSecret = []byte(strings.Repeat("t", 32))
	pushSecret  = []byte(strings.Repeat("p", 32))
)

// cluster is a sequencer, a writer into Pebble and a fanout over one
// embedded broker; nodes are added with node.
type cluster struct {
	t          *testing.T
	kc         kafka.Config
	st         store.Store
	f          *fanout.Fanout
	reg        *prometheus.Registry // fanout's metrics
	stopFanout func()               // ends f's Run (a clean stop: it commits what it pushed)
}

func run(t *testing.T, fn func(context.Context) error) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newCluster(t *testing.T) *cluster {
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c := &cluster{t: t, kc: kafka.Config{Brokers: []string{b.Addr()}, Partitions: 4}.WithDefaults(), reg: prometheus.NewRegistry()}
	c.st = testutil.Pebble(t)
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: "seq"})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s.Run)
	w, err := writer.New(writer.Config{Kafka: c.kc}, c.st)
	if err != nil {
		t.Fatal(err)
	}
	run(t, w.Run)
	c.startFanout(c.reg)
	return c
}

// startFanout starts a fanout instance with its metrics in reg.
func (c *cluster) startFanout(reg *prometheus.Registry) {
	f, err := fanout.New(fanout.Config{Kafka: c.kc, PushSecret: pushSecret, Registerer: reg}, c.st)
	if err != nil {
		c.t.Fatal(err)
	}
	c.f, c.stopFanout = f, run(c.t, f.Run)
}

// node starts a connector node with a push endpoint; stop ends it cleanly.
func (c *cluster) node(id string) (addr string, stop func()) {
	cmd, err := connector.NewCommander(context.Background(), connector.CommanderConfig{Kafka: c.kc, NodeID: id})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cmd.Close)
	g, err := connector.NewGateway(connector.GatewayConfig{
		Listen: "127.0.0.1:0", TokenSecret: tokenSecret, PushListen: "127.0.0.1:0", PushSecret: pushSecret,
		DrainWindow: 10 * time.Millisecond,
		// The tests send faster than the product's default frame rate;
		// what they test is delivery, not the limit.
		RatePerSecond: 1000, RateBurst: 1000,
	}, cmd, c.st)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		c.t.Fatal(err)
	}
	stop = run(c.t, func(ctx context.Context) error { return connector.Serve(ctx, cmd, g) })
	<-cmd.Ready()
	return g.Addr().String(), stop
}

// device is one client connection that records what is pushed to it.
type device struct {
	t    *testing.T
	conn *websocket.Conn
	wmu  sync.Mutex

	mu      sync.Mutex
	events  map[string][]int64 // conv -> seqs in arrival order
	typing  []string           // "conv/from"
	replies map[string]chan map[string]any
	n       atomic.Int64
}

func login(t *testing.T, addr, user, dev string) *device {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tok, err := auth.Sign(tokenSecret, user, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d := &device{t: t, conn: conn, events: make(map[string][]int64), replies: make(map[string]chan map[string]any)}
	if err := conn.WriteJSON(map[string]any{"op": "auth", "id": "a", "token": tok, "device": dev}); err != nil {
		t.Fatal(err)
	}
	var ok map[string]any
	if err := conn.ReadJSON(&ok); err != nil || ok["op"] != "auth_ok" {
		t.Fatalf("auth: %v %v", ok, err)
	}
	go d.read()
	return d
}

func (d *device) read() {
	for {
		var m map[string]any
		if err := d.conn.ReadJSON(&m); err != nil {
			return
		}
		d.mu.Lock()
		switch m["op"] {
		case "event":
			conv := m["conv"].(string)
			d.events[conv] = append(d.events[conv], int64(m["seq"].(float64)))
			d.n.Add(1)
		case "typing":
			d.typing = append(d.typing, fmt.Sprint(m["conv"], "/", m["from"]))
		default:
			if ch := d.replies[fmt.Sprint(m["id"])]; ch != nil {
				ch <- m
			}
		}
		d.mu.Unlock()
	}
}

var ids atomic.Int64

func (d *device) call(req map[string]any) map[string]any {
	d.t.Helper()
	id := fmt.Sprint(ids.Add(1))
	req["id"] = id
	ch := make(chan map[string]any, 1)
	d.mu.Lock()
	d.replies[id] = ch
	d.mu.Unlock()
	d.write(req)
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		d.t.Fatalf("no reply to %v", req)
		return nil
	}
}

func (d *device) write(v any) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if err := d.conn.WriteJSON(v); err != nil {
		d.t.Fatal(err)
	}
}

// seqs returns the seqs pushed for conv so far.
func (d *device) seqs(conv string) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int64(nil), d.events[conv]...)
}

// wantAll waits until conv's seqs 1..n have arrived, then checks that they
// came exactly once and in order.
func (d *device) wantAll(name, conv string, n int64) {
	d.t.Helper()
	testutil.WaitFor(d.t, 30*time.Second, fmt.Sprintf("%s to get %d events of %s", name, n, conv), func() bool {
		return int64(len(d.seqs(conv))) >= n
	})
	got := d.seqs(conv)
	for i, s := range got {
		if s != int64(i+1) {
			d.t.Fatalf("%s got seqs %v of %s: want 1..%d, each once, in order", name, got, conv, n)
		}
	}
	if int64(len(got)) != n {
		d.t.Fatalf("%s got %d events of %s, want %d", name, len(got), conv, n)
	}
}

func TestPushesReachEveryDeviceOnEveryNode(t *testing.T) {
	c := newCluster(t)
	n1, _ := c.node("node-1")
	n2, _ := c.node("node-2")
	alicePhone := login(t, n1, "alice", "phone")
	aliceLaptop := login(t, n2, "alice", "laptop")
	bob := login(t, n2, "bob", "phone")

	dm := alicePhone.call(map[string]any{"op": "create", "kind": "direct", "members": []string{"bob"}})["conv"].(string)
	others := []string{"bob"}
	for i := range 48 {
		others = append(others, fmt.Sprintf("user-%02d", i))
	}
	group := alicePhone.call(map[string]any{"op": "create", "kind": "group", "members": others, "title": "fifty"})["conv"].(string)
	const msgs = 20
	for i := range msgs {
		for _, conv := range []string{dm, group} {
			if r := alicePhone.call(map[string]any{"op": "send", "conv": conv, "cmid": fmt.Sprint("a-", i), "body": i}); r["op"] != "ack" {
				t.Fatalf("send: %v", r)
			}
		}
		if r := bob.call(map[string]any{"op": "send", "conv": dm, "cmid": fmt.Sprint("b-", i), "body": i}); r["op"] != "ack" {
			t.Fatalf("send: %v", r)
		}
	}
	// created + alice's and bob's messages in the DM; created + alice's in
	// the group. The sender's own devices get everything too.
	for name, d := range map[string]*device{"alice's phone": alicePhone, "alice's laptop": aliceLaptop, "bob": bob} {
		d.wantAll(name, dm, 1+2*msgs)
		d.wantAll(name, group, 1+msgs)
	}

	// Typing reaches the other members' devices, not the typist's own.
	bob.write(map[string]any{"op": "typing", "conv": dm})
	testutil.WaitFor(t, 20*time.Second, "alice's devices to see bob typing", func() bool {
		ok := true
		for _, d := range []*device{alicePhone, aliceLaptop} {
			d.mu.Lock()
			ok = ok && len(d.typing) == 1 && d.typing[0] == dm+"/bob"
			d.mu.Unlock()
		}
		return ok
	})
	// A non-member's typing goes nowhere.
	mallory := login(t, n1, "mallory", "x")
	mallory.write(map[string]any{"op": "typing", "conv": dm})
	bob.write(map[string]any{"op": "typing", "conv": dm}) // a marker after it
	testutil.WaitFor(t, 20*time.Second, "the marker typing signal", func() bool {
		alicePhone.mu.Lock()
		defer alicePhone.mu.Unlock()
		return len(alicePhone.typing) == 2
	})
	alicePhone.mu.Lock()
	if alicePhone.typing[1] != dm+"/bob" {
		t.Fatalf("typing signals %v", alicePhone.typing)
	}
	alicePhone.mu.Unlock()
	bob.mu.Lock()
	if len(bob.typing) != 0 {
		t.Fatalf("bob saw typing %v", bob.typing)
	}
	bob.mu.Unlock()

	// The 48 offline members get a notification per message (not for the
	// created event); online alice and bob get none.
	notes := map[string]int{}
	testutil.WaitFor(t, 20*time.Second, "notifications", func() bool {
		clear(notes)
		err := kafka.ReadToEnd(context.Background(), c.kc.ClientOpts(), c.kc.Topics().Notifications, nil, func(r *kgo.Record) error {
			var n parleyv1.Notification
			if err := proto.Unmarshal(r.Value, &n); err != nil {
				return err
			}
			if n.User != string(r.Key) || n.Event.GetConv() != group || n.Event.GetType() != parleyv1.EventType_EVENT_TYPE_MESSAGE {
				return fmt.Errorf("notification %v under key %s", &n, r.Key)
			}
			notes[n.User]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(notes) == 48 && notes["user-00"] == msgs && notes["user-47"] == msgs
	})
	if notes["alice"] != 0 || notes["bob"] != 0 {
		t.Fatalf("notifications for online users: %v", notes)
	}
}

// TestPollRoutesEachConversation: a poll that holds many events of two
// conversations with no member in common (fanout was down while they were
// sequenced) pushes each event to its own conversation's members only,
// though consecutive events of one conversation share their route.
func TestPollRoutesEachConversation(t *testing.T) {
	c := newCluster(t)
	n1, _ := c.node("node-1")
	n2, _ := c.node("node-2")
	alice, bob := login(t, n1, "alice", "phone"), login(t, n2, "bob", "phone")
	carol, dave := login(t, n1, "carol", "phone"), login(t, n2, "dave", "phone")
	c.stopFanout()

	g1 := alice.call(map[string]any{"op": "create", "kind": "group", "members": []string{"bob"}, "title": "one"})["conv"].(string)
	g2 := carol.call(map[string]any{"op": "create", "kind": "group", "members": []string{"dave"}, "title": "two"})["conv"].(string)
	const msgs = 30
	for i := range msgs {
		for _, s := range []struct {
			d    *device
			conv string
		}{{alice, g1}, {carol, g2}, {bob, g1}} {
			if r := s.d.call(map[string]any{"op": "send", "conv": s.conv, "cmid": fmt.Sprint("m-", i), "body": i}); r["op"] != "ack" {
				t.Fatalf("send: %v", r)
			}
		}
	}
	if n := alice.n.Load() + bob.n.Load() + carol.n.Load() + dave.n.Load(); n != 0 {
		t.Fatalf("%d pushes while fanout was down", n)
	}

	c.startFanout(prometheus.NewRegistry())
	for name, d := range map[string]*device{"alice": alice, "bob": bob} {
		d.wantAll(name, g1, 1+2*msgs)
	}
	for name, d := range map[string]*device{"carol": carol, "dave": dave} {
		d.wantAll(name, g2, 1+msgs)
	}
	for name, d := range map[string]*device{"alice": alice, "bob": bob, "carol": carol, "dave": dave} {
		d.mu.Lock()
		if len(d.events) != 1 {
			t.Errorf("%s got events of %d conversations: %v", name, len(d.events), d.events)
		}
		d.mu.Unlock()
	}
}

// TestDeadNodeStopsGettingPushes: a node that vanishes without cleanup
// (no tombstones) stops getting pushes once 3 heartbeat intervals pass.
func TestDeadNodeStopsGettingPushes(t *testing.T) {
	c := newCluster(t)
	n1, _ := c.node("node-1")
	alice := login(t, n1, "alice", "phone")
	conv := alice.call(map[string]any{"op": "create", "kind": "direct", "members": []string{"bob"}})["conv"].(string)

	// A ghost node: its push endpoint counts what it gets; its presence
	// says bob is there, with a 100 ms heartbeat.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ghostPushes atomic.Int64
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		var b parleyv1.PushBatch
		if proto.Unmarshal(ctx.PostBody(), &b) == nil {
			ghostPushes.Add(int64(len(b.Pushes)))
		}
		ctx.SetBodyString(`{"delivered":0}`)
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	cl, err := kgo.NewClient(c.kc.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topic := c.kc.Topics().Presence
	beat := func() {
		hb, _ := proto.Marshal(&parleyv1.NodeHeartbeat{Node: "ghost", PushAddr: ln.Addr().String(), Ts: time.Now().UnixMilli(), IntervalMs: 100})
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(schema.PresenceNodeKey("ghost")), Value: hb}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	up, _ := proto.Marshal(&parleyv1.UserPresence{User: "bob", Node: "ghost", Devices: []string{"phone"}, Ts: time.Now().UnixMilli()})
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(schema.PresenceUserKey("bob", "ghost")), Value: up}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	beat()
	send := func(cmid string) int64 {
		r := alice.call(map[string]any{"op": "send", "conv": conv, "cmid": cmid, "body": 1})
		if r["op"] != "ack" {
			t.Fatalf("send: %v", r)
		}
		return int64(r["seq"].(float64))
	}
	// While it beats, bob's events go there.
	testutil.WaitFor(t, 20*time.Second, "a push to the live ghost", func() bool {
		beat()
		send(fmt.Sprint("live-", ids.Add(1)))
		return ghostPushes.Load() > 0
	})
	if !c.f.NodeAlive("ghost") {
		t.Fatal("the ghost counts as dead while it beats")
	}
	// It stops beating: after 3 intervals (300 ms) nothing more goes there.
	testutil.WaitFor(t, 5*time.Second, "the ghost to count as dead", func() bool { return !c.f.NodeAlive("ghost") })
	before := ghostPushes.Load()
	var last int64
	for i := range 5 {
		last = send(fmt.Sprint("dead-", i))
	}
	// Pushes of one poll go out together: once alice has the last event,
	// any push of it to the ghost has been made.
	alice.wantAll("alice", conv, last)
	if got := ghostPushes.Load(); got != before {
		t.Fatalf("the dead node got %d more pushes", got-before)
	}

	// Its push series last until it shuts down cleanly (its heartbeat
	// deleted): then they go, as node ids change with restarts.
	if !c.hasNodeSeries("ghost") {
		t.Fatal("no push series for the ghost")
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(schema.PresenceNodeKey("ghost"))}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the ghost's push series to go", func() bool { return !c.hasNodeSeries("ghost") })
}

// hasNodeSeries reports whether fanout's push metrics have a series for
// node.
func (c *cluster) hasNodeSeries(node string) bool {
	fams, err := c.reg.Gather()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "parley_fanout_pushes_total" && f.GetName() != "parley_fanout_push_failures_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "node" && l.GetValue() == node {
					return true
				}
			}
		}
	}
	return false
}

// The sequencer and fanout stopped while they start (their context ends
// before the topics are set up) stop cleanly: Run returns nil, as it does
// for a stop at any later time.
func TestRunStoppedWhileStarting(t *testing.T) {
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kc := kafka.Config{Brokers: []string{b.Addr()}, Partitions: 4}.WithDefaults()
	st := testutil.Pebble(t)
	s, err := sequencer.New(sequencer.Config{Kafka: kc, NodeID: "seq"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fanout.New(fanout.Config{Kafka: kc, PushSecret: pushSecret}, st)
	if err != nil {
		t.Fatal(err)
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(stopped); err != nil {
		t.Errorf("the sequencer, stopped while starting: %v", err)
	}
	if err := f.Run(stopped); err != nil {
		t.Errorf("fanout, stopped while starting: %v", err)
	}
}
