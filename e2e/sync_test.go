package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/connector"
)

// TestOfflineCatchUp: a user in 100 conversations goes offline while
// 10,000 events arrive across them (some from the user's other device);
// back online, sync and history bring every conversation up to its last seq
// with nothing missing or doubled, and the unread counts are the messages
// others sent meanwhile.
func TestOfflineCatchUp(t *testing.T) {
	const (
		convs     = 100
		perConv   = 100 // messages per conversation while offline
		perSender = 22  // from each of the 4 others
		ownLaptop = perConv - 4*perSender
	)
	e := newEdge(t, connector.GatewayConfig{RatePerSecond: 10000, RateBurst: 10000}, connector.CommanderConfig{}, nil)
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
	st := e.store
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
