package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
)

// TestOfflineCatchUp: a user in 100 conversations goes offline while
// 10,000 events arrive across them (some from the user's other device);
// back online, sync and history bring every conversation up to its last seq
// with nothing missing or doubled, and the unread counts are the messages
// others sent meanwhile.
func TestOfflineCatchUp(t *testing.T) {
	t.Run("pebble", func(t *testing.T) {
		st := openStore(t, t.TempDir())
		t.Cleanup(func() { st.Close() })
		offlineCatchUp(t, st)
	})
	t.Run("cassandra", func(t *testing.T) { offlineCatchUp(t, openCassandra(t, cstest.NewKeyspace(t))) })
}

func offlineCatchUp(t *testing.T, st store.Store) {
	const (
		convs     = 100
		perConv   = 100 // messages per conversation while offline
		perSender = 22  // from each of the 4 others
		ownLaptop = perConv - 4*perSender
	)
	e := newEdgeOn(t, st, connector.GatewayConfig{RatePerSecond: 10000, RateBurst: 10000}, connector.CommanderConfig{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	phone := connect(t, "u's phone", "u", "phone", nil, e.addr)
	laptop := connect(t, "u's laptop", "u", "laptop", nil, e.addr)
	senders := make([]*device, 4)
	for i := range senders {
		senders[i] = connect(t, fmt.Sprint("sender ", i), fmt.Sprint("s", i), "d", nil, e.addr)
	}
	ids := make([]string, convs)
	for i := range ids {
		owner := senders[i%len(senders)]
		conv, err := owner.c.Create(ctx, "group", []string{"u", "s0", "s1", "s2", "s3"}, fmt.Sprint("room ", i))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = conv
	}
	// The phone holds every conversation up to its current end, and has
	// read it all.
	held := make(map[string]int64, convs)
	for _, conv := range ids {
		phone.upTo(conv, 0, 1)
		held[conv] = 1
		if err := phone.c.Read(ctx, conv, 1); err != nil {
			t.Fatal(err)
		}
	}
	phone.close()

	// 10,000 messages arrive: per conversation 100, 12 of them from the
	// user's laptop (not unread), the rest from the four others.
	var wg sync.WaitGroup
	last := make([]int64, convs)
	var lastMu sync.Mutex
	for w, d := range append([]*device{laptop}, senders...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, conv := range ids {
				n := perSender
				if d == laptop {
					n = ownLaptop
				}
				for k := range n {
					ack, err := d.c.SendCMID(ctx, conv, fmt.Sprintf("w%d-%d-%d", w, i, k), "text", k)
					if err != nil {
						t.Errorf("%s: %v", d.name, err)
						return
					}
					lastMu.Lock()
					last[i] = max(last[i], ack.Seq)
					lastMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for i := range ids {
		total += int(last[i] - held[ids[i]])
	}
	if total < convs*perConv {
		t.Fatalf("only %d events after the held positions", total)
	}
	// Wait until the store has them all, so that sync sees the end.
	waitFor(t, time.Minute, "the writer to store every event", func() bool {
		for i, conv := range ids {
			h, err := st.Conversation(ctx, conv)
			if err != nil || h.LastSeq < last[i] {
				return false
			}
		}
		return true
	})

	start := time.Now()
	back := connect(t, "u's phone, back", "u", "phone", held, e.addr)
	got, err := back.c.CatchUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("caught up %d events in %d conversations in %v (%.0f events/s)", total, convs, took.Round(time.Millisecond), float64(total)/took.Seconds())
	if len(got) != convs {
		t.Fatalf("sync listed %d conversations, want %d", len(got), convs)
	}
	for _, cv := range got {
		i := slicesIndex(ids, cv.Conv)
		if i < 0 {
			t.Fatalf("sync listed %s, not one of the user's", cv.Conv)
		}
		if cv.LastSeq != last[i] || cv.ReadSeq != 1 || cv.Unread != 4*perSender {
			t.Fatalf("sync entry %+v; want last_seq %d, read_seq 1, unread %d", cv, last[i], 4*perSender)
		}
		back.upTo(cv.Conv, 1, last[i])
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestReadsAcrossDevices: a read on device A reaches device B live (the read
// event, and through it the read receipt) and B's next sync shows the
// unread count gone; the other members see who read up to where.
func TestReadsAcrossDevices(t *testing.T) {
	e := newEdge(t, connector.GatewayConfig{}, connector.CommanderConfig{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := connect(t, "alice A", "alice", "a", nil, e.addr)
	b := connect(t, "alice B", "alice", "b", nil, e.addr)
	bob := connect(t, "bob", "bob", "phone", nil, e.addr)
	conv, err := bob.c.Create(ctx, "group", []string{"alice", "carol"}, "reads")
	if err != nil {
		t.Fatal(err)
	}
	last := bob.sendAll(conv, "m", 5)
	b.upTo(conv, 0, last)
	unread := func() int {
		cs, err := b.c.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Conv == conv {
				return c.Unread
			}
		}
		t.Fatalf("sync has no %s", conv)
		return -1
	}
	waitFor(t, time.Minute, "device B to count 5 unread", func() bool { return unread() == 5 })
	if err := a.c.Read(ctx, conv, last); err != nil {
		t.Fatal(err)
	}
	// Live: B and bob get the read event; their timelines show the receipt.
	b.upTo(conv, 0, last+1)
	bob.upTo(conv, 0, last+1)
	// Pushes can come before the writer stores the event: the history is
	// read once it has the read event.
	var evs []client.Event
	waitFor(t, time.Minute, "the store to hold the read event", func() bool {
		evs, _, err = bob.c.History(ctx, conv, 0, 0, 100)
		return err == nil && len(evs) > 0 && evs[len(evs)-1].Seq >= last+1
	})
	var tl client.Timeline
	for _, ev := range evs {
		tl.Apply(ev)
	}
	if tl.ReadBy["alice"] != last || len(tl.Messages) != 5 {
		t.Fatalf("bob's timeline: receipts %v, %d messages", tl.ReadBy, len(tl.Messages))
	}
	// A fresh sync on B: nothing unread, the cursor at the last message.
	waitFor(t, time.Minute, "device B's unread count to drop", func() bool { return unread() == 0 })
	// A cursor never moves back.
	if err := b.c.Read(ctx, conv, 2); err != nil {
		t.Fatal(err)
	}
	if cs, _ := b.c.Sync(ctx); cs[0].ReadSeq != last {
		t.Fatalf("after reading back to 2: %+v", cs[0])
	}
}

// TestHistoryPaging: 2,500 events read forward in pages of 1,000 and
// backward from the end give the same sequence; a limit over 1,000 is
// refused with bad_request.
func TestHistoryPaging(t *testing.T) {
	e := newEdge(t, connector.GatewayConfig{RatePerSecond: 10000, RateBurst: 10000}, connector.CommanderConfig{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := connect(t, "alice", "alice", "phone", nil, e.addr)
	conv, err := alice.c.Create(ctx, "direct", []string{"bob"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 2499; i += 8 {
				if _, err := alice.c.SendCMID(ctx, conv, fmt.Sprint("p", i), "text", i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	const n = 2500 // created + 2,499 messages
	waitFor(t, time.Minute, "the writer to store all 2,500", func() bool {
		h, err := e.store.Conversation(ctx, conv)
		return err == nil && h.LastSeq == n
	})
	var forward []int64
	for after, more := int64(0), true; more; {
		evs, m, err := alice.c.History(ctx, conv, after, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			forward = append(forward, ev.Seq)
		}
		more, after = m, evs[len(evs)-1].Seq
	}
	var backward []int64
	for before, more := int64(n+1), true; more; {
		evs, m, err := alice.c.History(ctx, conv, 0, before, 1000)
		if err != nil {
			t.Fatal(err)
		}
		page := make([]int64, 0, len(evs))
		for _, ev := range evs {
			page = append(page, ev.Seq)
		}
		backward = append(page, backward...)
		more, before = m, evs[0].Seq
	}
	if len(forward) != n || !slicesEqual(forward, backward) || forward[0] != 1 || forward[n-1] != n {
		t.Fatalf("forward %d events, backward %d; equal %v", len(forward), len(backward), slicesEqual(forward, backward))
	}
	if _, _, err := alice.c.History(ctx, conv, 0, 0, 1001); !client.IsCode(err, "bad_request") {
		t.Fatalf("limit 1001: %v", err)
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
