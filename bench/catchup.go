package bench

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
)

// runCatchup fills cfg.Convs direct conversations of one user with
// cfg.Events events in all while none of the user's devices is online,
// waits until the store holds them, then times a device that connects and
// catches up (client.CatchUp) until it has been delivered every event.
func runCatchup(ctx context.Context, cfg Config, res *Result) error {
	rg, err := newRig(ctx, cfg, openLimits...)
	if err != nil {
		return err
	}
	defer rg.close()
	const me = "catcher"
	// The fillers: one per conversation, each sending its share.
	fillers := make([]*client.Client, cfg.Convs)
	defer closeAll(fillers)
	convs := make([]string, cfg.Convs)
	heads := make(map[string]int64, cfg.Convs)
	if err := parallel(ctx, cfg.Convs, func(i int) error {
		c, err := rg.dial(ctx, i+1, fmt.Sprintf("filler%04d", i), "d", nil)
		if err != nil {
			return err
		}
		fillers[i] = c
		go func() { // its own pushes
			for range c.Events() {
			}
		}()
		convs[i], err = c.Create(ctx, "direct", []string{me}, "")
		return err
	}); err != nil {
		return fmt.Errorf("creating the conversations: %w", err)
	}
	var sent atomic.Int64
	fillStart := time.Now()
	fill := newProgress(Config{Scenario: "catchup fill", Progress: cfg.Progress}, fillStart, newRecorder(), func() string {
		return fmt.Sprintf("%d of %d sent", sent.Load(), cfg.Events-cfg.Convs)
	})
	body := rawJSON(fmt.Appendf(nil, `{"text":%q}`, strings.Repeat("x", cfg.BodySize)))
	err = parallel(ctx, cfg.Convs, func(i int) error {
		n := (cfg.Events - cfg.Convs) / cfg.Convs // the created event is one of them
		if i < (cfg.Events-cfg.Convs)%cfg.Convs {
			n++
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		var first error
		var mu sync.Mutex
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := next.Add(1) - 1; k < int64(n); k = next.Add(1) - 1 {
					if _, err := fillers[i].SendCMID(ctx, convs[i], fmt.Sprintf("f%d", k), "text", body); err != nil {
						mu.Lock()
						first = err
						mu.Unlock()
						return
					}
					sent.Add(1)
				}
			}()
		}
		wg.Wait()
		return first
	})
	fill.stop()
	if err != nil {
		return fmt.Errorf("filling: %w", err)
	}
	for i, conv := range convs {
		n := (cfg.Events - cfg.Convs) / cfg.Convs
		if i < (cfg.Events-cfg.Convs)%cfg.Convs {
			n++
		}
		heads[conv] = int64(n) + 1
	}
	res.Figures["fill_events_per_s"] = float64(cfg.Events) / time.Since(fillStart).Seconds()
	// Wait for the store to hold every event: history is what catch-up reads.
	for i, conv := range convs {
		for {
			evs, _, err := fillers[i].History(ctx, conv, 0, math.MaxInt64, 1)
			if err == nil && len(evs) == 1 && evs[0].Seq == heads[conv] {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The catch-up, timed from the dial.
	rec := newRecorder()
	start := time.Now()
	prog := newProgress(cfg, start, rec, nil)
	cpu := startCPU(rg.srv)
	// The device had seen none of the events: it tracks each conversation
	// from seq 0, as a client that persisted its position passes it.
	tracked := make(map[string]int64, len(convs))
	for _, conv := range convs {
		tracked[conv] = 0
	}
	c, err := rg.dial(ctx, 0, me, "phone", tracked)
	if err != nil {
		prog.stop()
		return err
	}
	defer c.Close()
	caught := make(chan error, 1)
	go func() {
		_, err := c.CatchUp(ctx)
		caught <- err
	}()
	last := make(map[string]int64, len(convs))
	var total, want int64
	for _, h := range heads {
		want += h
	}
	var errs errList
	timeout := time.After(5 * time.Minute)
	// Until every event is in and CatchUp has returned, or something failed.
	for caughtUp, failed := false, false; !failed && (total < want || !caughtUp); {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				errs.add(fmt.Sprintf("the client stopped: %v", c.Err()))
				failed = true
				continue
			}
			if ev.Seq != last[ev.Conv]+1 {
				errs.add(fmt.Sprintf("seq %d of %s after %d", ev.Seq, ev.Conv, last[ev.Conv]))
			}
			if _, ok := heads[ev.Conv]; !ok {
				errs.add(fmt.Sprintf("an event of %s, a conversation not filled", ev.Conv))
			}
			last[ev.Conv] = ev.Seq
			total++
			rec.count.Add(1)
		case err := <-caught:
			caughtUp = true
			if err != nil {
				errs.add(fmt.Sprintf("catch-up: %v", err))
				failed = true
			}
		case <-timeout:
			errs.add(fmt.Sprintf("catch-up delivered %d of %d events in 5 minutes", total, want))
			failed = true
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.CPU = cpu.end()
	res.Timeline = prog.stop()
	for conv, h := range heads {
		if last[conv] != h {
			errs.add(fmt.Sprintf("caught up %s to seq %d of %d", conv, last[conv], h))
		}
	}
	st := c.Stats()
	res.Count, res.Unit = total, "events/s"
	res.Counts["events"] = want
	res.Counts["delivered"] = total
	res.Counts["history_pages"] = st.HistoryPages
	res.Errors, res.ErrorCount = errs.snapshot()
	return nil
}
