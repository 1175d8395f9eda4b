package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
)

// Real-time delivery through the whole pipeline, with the Go client over
// real sockets: connector nodes, fanout, sequencer, writer and broker.

var (
	rtTokenSecret = strings.Repeat("k", 32)
	rtPushSecret  = strings.Repeat("q", 32)
)

const rtHeartbeat = 500 * time.Millisecond

// device is one client and what it delivered, per conversation.
type device struct {
	t    *testing.T
	name string
	c    *client.Client
	mu   sync.Mutex
	seqs map[string][]int64
	done chan struct{}
}

func wsURL(addr string) string { return "ws://" + addr + "/v1/ws" }

// connect dials user's device to urls (the first that answers; reconnects
// go round the list) and records every delivered event.
func connect(t *testing.T, name, user, dev string, tracked map[string]int64, urls ...string) *device {
	t.Helper()
	var ws []string
	for _, u := range urls {
		ws = append(ws, wsURL(u))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{
		URLs:   ws,
		Device: dev,
		Token: func(context.Context) (string, error) {
			return auth.Sign([]byte(rtTokenSecret), user, time.Hour, time.Now())
		},
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		Tracked:    tracked,
		Logger:     testLogger(t),
	})
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	d := &device{t: t, name: name, c: c, seqs: make(map[string][]int64), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for ev := range c.Events() {
			d.mu.Lock()
			d.seqs[ev.Conv] = append(d.seqs[ev.Conv], ev.Seq)
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { d.close() })
	return d
}

// close disconnects the device and waits for its last events.
func (d *device) close() {
	d.c.Close()
	<-d.done
}

func (d *device) got(conv string) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seqs[conv])
}

// upTo waits until d delivered conv's seq n and checks that it delivered
// exactly from+1..n, in order, once each.
func (d *device) upTo(conv string, from, n int64) {
	d.t.Helper()
	waitFor(d.t, time.Minute, fmt.Sprintf("%s to deliver seq %d of %s", d.name, n, conv), func() bool {
		s := d.got(conv)
		return len(s) > 0 && s[len(s)-1] >= n
	})
	want := make([]int64, 0, n-from)
	for s := from + 1; s <= n; s++ {
		want = append(want, s)
	}
	if got := d.got(conv); !slices.Equal(got, want) {
		d.t.Fatalf("%s delivered %s seqs %v; want %d..%d once each, in order", d.name, conv, summarize(got), from+1, n)
	}
}

// summarize shortens a long seq list for a failure message.
func summarize(s []int64) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return fmt.Sprintf("%v ... %v (%d)", s[:10], s[len(s)-10:], len(s))
}

// sendAll sends n messages to conv from d and returns the last seq.
func (d *device) sendAll(conv, prefix string, n int) int64 {
	d.t.Helper()
	var last int64
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ack, err := d.c.SendCMID(ctx, conv, fmt.Sprintf("%s-%d", prefix, i), "text", map[string]any{"n": i})
		cancel()
		if err != nil {
			d.t.Fatalf("%s: send %d: %v", d.name, i, err)
		}
		last = max(last, ack.Seq)
	}
	return last
}

// deliveryScenario is issue 4's delivery walk-through on two connector
// addresses (the same one twice inside `parley dev`): alice on both, bob on
// the second; a direct conversation and a 50-member group; every device
// gets every event once, in order, the sender's other device too. Then bob
// is away for 500 messages and comes back on the other node: he catches up
// through history and goes on with live pushes, with no gap or duplicate.
// It returns the devices, the conversations and their heads.
func deliveryScenario(t *testing.T, n1, n2 string) (phone, laptop, bob *device, dm, group string, heads map[string]int64) {
	phone = connect(t, "alice's phone", "alice", "phone", nil, n1, n2)
	laptop = connect(t, "alice's laptop", "alice", "laptop", nil, n2, n1)
	bob = connect(t, "bob", "bob", "phone", nil, n2, n1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dm, err := phone.c.Create(ctx, "direct", []string{"bob"}, "")
	if err != nil {
		t.Fatal(err)
	}
	members := []string{"bob"}
	for i := range 48 {
		members = append(members, fmt.Sprintf("member-%02d", i))
	}
	group, err = phone.c.Create(ctx, "group", members, "fifty")
	if err != nil {
		t.Fatal(err)
	}
	heads = map[string]int64{}
	var wg sync.WaitGroup
	var bobLast int64
	wg.Add(1)
	go func() { defer wg.Done(); bobLast = bob.sendAll(dm, "bob", 30) }()
	heads[group] = phone.sendAll(group, "g", 30)
	heads[dm] = phone.sendAll(dm, "a", 30)
	wg.Wait()
	heads[dm] = max(heads[dm], bobLast)
	for _, d := range []*device{phone, laptop, bob} {
		d.upTo(dm, 0, heads[dm])
		d.upTo(group, 0, heads[group])
		if st := d.c.Stats(); st.Gaps != 0 || st.Overflows != 0 {
			t.Errorf("%s missed pushes while online: %+v", d.name, st)
		}
	}

	// bob goes away; 500 messages arrive; he comes back on node 1.
	bob.close()
	held := map[string]int64{dm: heads[dm], group: heads[group]}
	heads[dm] = phone.sendAll(dm, "away", 500)
	bob2 := connect(t, "bob, back", "bob", "phone", held, n1, n2)
	bob2.upTo(dm, held[dm], heads[dm])
	if st := bob2.c.Stats(); st.HistoryPages == 0 {
		t.Errorf("bob caught up without history: %+v", st)
	}
	heads[dm] = laptop.sendAll(dm, "live", 20)
	heads[group] = laptop.sendAll(group, "live", 5)
	bob2.upTo(dm, held[dm], heads[dm])
	bob2.upTo(group, held[group], heads[group])
	for _, d := range []*device{phone, laptop} {
		d.upTo(dm, 0, heads[dm])
		d.upTo(group, 0, heads[group])
	}
	return phone, laptop, bob2, dm, group, heads
}

// TestRealtimeCluster runs the scenario on a cluster: two connector
// processes, and a sequencer, writer and fanout, over one broker and the
// real Cassandra. Then node 1 is killed with SIGKILL: its users reconnect to
// node 2 and lose nothing, and fanout stops pushing to node 1 within the
// documented bound (3 heartbeat intervals).
func TestRealtimeCluster(t *testing.T) {
	cfg := cstest.NewKeyspace(t)
	st := openCassandra(t, cfg)
	c := newCluster(t)
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-rt").Run)
	startChild(t, "writer", append([]string{"writer", "--brokers", c.broker.Addr(), "--log-level", "warn"}, cassandraArgs(cfg)...)...)
	f, err := fanout.New(fanout.Config{Kafka: c.kc, PushSecret: []byte(rtPushSecret), Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "fanout", f.Run)
	node := func(id string) (*child, string) {
		addr := testutil.FreeAddr(t)
		args := append([]string{"connector", "--brokers", c.broker.Addr(), "--node-id", id, "--listen", addr,
			"--push-listen", testutil.FreeAddr(t), "--push-secret", rtPushSecret, "--token-secret", rtTokenSecret,
			"--heartbeat", rtHeartbeat.String(), "--log-level", "warn"}, cassandraArgs(cfg)...)
		ch := startChild(t, id, args...)
		testutil.WaitListening(t, addr)
		return ch, addr
	}
	node1, n1 := node("node-1")
	_, n2 := node("node-2")
	waitFor(t, time.Minute, "fanout to see both nodes", func() bool { return f.NodeAlive("node-1") && f.NodeAlive("node-2") })

	phone, laptop, bob, dm, group, heads := deliveryScenario(t, n1, n2)
	if phone.c.Node() != "node-1" || bob.c.Node() != "node-1" || laptop.c.Node() != "node-2" {
		t.Fatalf("devices on %s, %s, %s; want node-1, node-1, node-2", phone.c.Node(), bob.c.Node(), laptop.c.Node())
	}

	// node 1 dies without cleanup.
	killed := time.Now()
	node1.kill()
	waitFor(t, 3*rtHeartbeat+30*time.Second, "fanout to stop pushing to node 1", func() bool { return !f.NodeAlive("node-1") })
	t.Logf("fanout counted node 1 dead %v after SIGKILL (bound: 3 heartbeats = %v after its last heartbeat)", time.Since(killed).Round(time.Millisecond), 3*rtHeartbeat)
	heads[dm] = laptop.sendAll(dm, "after-kill", 20)
	heads[group] = laptop.sendAll(group, "after-kill", 20)
	for _, d := range []*device{phone, laptop} {
		d.upTo(dm, 0, heads[dm])
		d.upTo(group, 0, heads[group])
	}
	bob.upTo(dm, bob.got(dm)[0]-1, heads[dm])
	bob.upTo(group, bob.got(group)[0]-1, heads[group])
	waitFor(t, time.Minute, "phone and bob to be on node 2", func() bool {
		return phone.c.Node() == "node-2" && bob.c.Node() == "node-2"
	})
	if f.NodeAlive("node-1") {
		t.Fatal("fanout counts the killed node alive again")
	}
}

// TestRealtimeDev runs the same scenario inside one `parley dev`.
func TestRealtimeDev(t *testing.T) {
	cmd := exec.Command(parleyBin, "--data-dir", t.TempDir(), "--broker-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--partitions", "4", "--log-level", "warn", "--token-secret", rtTokenSecret)
	_, public := startPrintingBoth(t, cmd)
	deliveryScenario(t, public, public)
}
