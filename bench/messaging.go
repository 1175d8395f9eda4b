package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/parley-im/parley/client"
)

// drainTimeout bounds the wait, after the sends end, for every acked
// message to be delivered.
const drainTimeout = time.Minute

// openLimits are the server flags of the messaging scenarios: the
// per-connection frame rate is a product limit against abuse, not what
// is measured.
var openLimits = []string{"--conn-rate", "100000", "--conn-burst", "100000"}

// runDM: cfg.Clients clients in pairs, each pair a direct conversation,
// every client sending to it.
func runDM(ctx context.Context, cfg Config, res *Result) error {
	rg, err := newRig(ctx, cfg, openLimits...)
	if err != nil {
		return err
	}
	defer rg.close()
	t := newTraffic(cfg, rg)
	pairs := cfg.Clients / 2
	clients := make([]*client.Client, cfg.Clients)
	defer closeAll(clients)
	if err := parallel(ctx, cfg.Clients, func(i int) error {
		c, err := rg.dial(ctx, i, dmUser(i), "d", nil)
		clients[i] = c
		return err
	}); err != nil {
		return err
	}
	for i, c := range clients {
		t.addReceiver(dmUser(i), c)
	}
	convs := make([]string, pairs)
	if err := parallel(ctx, pairs, func(p int) error {
		conv, err := clients[2*p].Create(ctx, "direct", []string{dmUser(2*p + 1)}, "")
		convs[p] = conv
		return err
	}); err != nil {
		return fmt.Errorf("creating the conversations: %w", err)
	}
	for i, c := range clients {
		t.addSender(dmUser(i), c, convs[i/2])
	}
	// Each receiver's conversation has two senders: its pair and itself.
	sendersOf := func(r *receiver) []*sender {
		p := r.idx / 2
		return []*sender{t.senders[2*p], t.senders[2*p+1]}
	}
	measure(ctx, cfg, rg, t, res, sendersOf, "msgs/s")
	return nil
}

func dmUser(i int) string { return fmt.Sprintf("dm%05d", i) }

// runGroup: one group of cfg.Members members, each online with one
// device, cfg.Senders of them sending.
func runGroup(ctx context.Context, cfg Config, res *Result) error {
	rg, err := newRig(ctx, cfg, openLimits...)
	if err != nil {
		return err
	}
	defer rg.close()
	t := newTraffic(cfg, rg)
	clients := make([]*client.Client, cfg.Members)
	defer closeAll(clients)
	user := func(i int) string { return fmt.Sprintf("gm%05d", i) }
	if err := parallel(ctx, cfg.Members, func(i int) error {
		c, err := rg.dial(ctx, i, user(i), "d", nil)
		clients[i] = c
		return err
	}); err != nil {
		return err
	}
	for i, c := range clients {
		t.addReceiver(user(i), c)
	}
	others := make([]string, 0, cfg.Members-1)
	for i := 1; i < cfg.Members; i++ {
		others = append(others, user(i))
	}
	conv, err := clients[0].Create(ctx, "group", others, "bench")
	if err != nil {
		return fmt.Errorf("creating the group: %w", err)
	}
	for i := range cfg.Senders {
		t.addSender(user(i), clients[i], conv)
	}
	sendersOf := func(*receiver) []*sender { return t.senders }
	measure(ctx, cfg, rg, t, res, sendersOf, "deliveries/s")
	res.Figures["msgs_per_s"] = float64(res.Counts["acked"]) / res.Seconds
	return nil
}

// measure runs t's sends, waits for their deliveries, checks them and
// fills res. The rate counted is deliveries to devices other than the
// sender's, over the time from the first send to the last such delivery.
func measure(ctx context.Context, cfg Config, rg *rig, t *traffic, res *Result, sendersOf func(*receiver) []*sender, unit string) {
	var want int64 // deliveries to others once every acked message is in
	wantAll := func() (n int64) {
		for _, r := range t.receivers {
			n += t.want(r, sendersOf)
		}
		return n
	}
	got := func() (n int64) {
		for _, r := range t.receivers {
			n += r.n.Load()
		}
		return n
	}
	cpu := startCPU(rg.srv)
	start := t.now()
	prog := newProgress(cfg, start, t.rec, func() string {
		var sent int64
		for _, s := range t.senders {
			sent += s.tried.Load()
		}
		return fmt.Sprintf("sent %d", sent)
	})
	sendCtx, cancel := context.WithTimeout(ctx, cfg.Duration+drainTimeout)
	trend := newTrendRecorder(start, cfg.Duration)
	t.trend.Store(trend)
	t.run(sendCtx, start)
	// Wait for every acked message to be delivered.
	want = wantAll()
	deadline := time.Now().Add(drainTimeout)
	for got() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	res.CPU = cpu.end()
	res.Timeline = prog.stop()
	if last := t.rec.lastAt(); !last.IsZero() {
		res.Seconds = last.Sub(start).Seconds()
	}
	closeAll(clientsOf(t))
	for _, r := range t.receivers {
		<-r.done
	}
	t.check(sendersOf)

	var sent, acked int64
	for _, s := range t.senders {
		sent += s.tried.Load()
		acked += s.n
	}
	res.Count = t.rec.count.Load()
	res.Unit = unit
	res.Counts["sent"] = sent
	res.Counts["acked"] = acked
	res.Counts["deliveries_to_others"] = res.Count
	res.Counts["deliveries_to_own_device"] = t.own.Load()
	res.Counts["deliveries_expected"] = want
	var retries, gaps, dups, reconnects int64
	for _, r := range t.receivers {
		st := r.c.Stats()
		retries += st.Retries
		gaps += st.Gaps
		dups += st.Duplicates
		reconnects += st.Connects - 1
	}
	res.Counts["retries"], res.Counts["gap_fills"], res.Counts["duplicate_pushes"], res.Counts["reconnects"] = retries, gaps, dups, reconnects
	res.Latency = latency(t.rec.total())
	res.AckLatency = latency(t.acks.total())
	res.Trend = trend.trend()
	first, n := t.sendErr.snapshot()
	res.Errors, res.ErrorCount = first, n
	if g := got(); g != want {
		res.Errors = append(res.Errors, fmt.Sprintf("%d message events delivered of %d acked for the receivers", g, want))
		res.ErrorCount++
	}
	first, n = t.rec.errs.snapshot()
	res.Errors, res.ErrorCount = append(res.Errors, first...), res.ErrorCount+n
}

func clientsOf(t *traffic) []*client.Client {
	cs := make([]*client.Client, len(t.receivers))
	for i, r := range t.receivers {
		cs[i] = r.c
	}
	return cs
}

func closeAll(cs []*client.Client) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// parallel runs f(0..n-1), at most 64 at a time, and returns the first
// error.
func parallel(ctx context.Context, n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 64)
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%d: %w", i, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
