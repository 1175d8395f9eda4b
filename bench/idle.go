package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-im/parley/client"
)

// idleDevices is the devices per user of the idle scenario (the server's
// default allows 16 connections per user).
const idleDevices = 10

// runIdle opens cfg.Clients authenticated connections that only keep
// alive, holds them for cfg.Duration, and measures the server's resident
// memory per connection: (RSS with them − RSS before) ÷ connections, each
// RSS read once it has settled.
func runIdle(ctx context.Context, cfg Config, res *Result) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(cfg.Clients)+256 > lim.Max {
		return fmt.Errorf("%d connections need as many file descriptors in this process (and in the server), but the hard limit (ulimit -Hn) is %d", cfg.Clients, lim.Max)
	}
	rg, err := newRig(ctx, cfg)
	if err != nil {
		return err
	}
	defer rg.close()
	var before int64
	if rg.srv != nil {
		if before, err = settledRSS(ctx, rg.srv.pid()); err != nil {
			return err
		}
	}
	clients := make([]*client.Client, cfg.Clients)
	defer closeAll(clients)
	rec := newRecorder() // connect + authenticate times
	var open atomic.Int64
	start := time.Now()
	prog := newProgress(cfg, start, rec, func() string { return fmt.Sprintf("%d open", open.Load()) })
	cpu := startCPU(rg.srv)
	err = parallel(ctx, cfg.Clients, func(i int) error {
		t0 := time.Now()
		c, err := rg.dial(ctx, i, fmt.Sprintf("idle%06d", i/idleDevices), fmt.Sprintf("d%d", i%idleDevices), nil)
		if err != nil {
			return err
		}
		now := time.Now()
		rec.record(i, now, now.Sub(t0))
		clients[i] = c
		open.Add(1)
		return nil
	})
	res.CPU = cpu.end()
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		prog.stop()
		return fmt.Errorf("after %d connections: %w", open.Load(), err)
	}
	res.Latency = latency(rec.total()) // connect + auth
	// Hold them, then measure.
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
		prog.stop()
		return ctx.Err()
	}
	res.Timeline = prog.stop()
	if rg.srv != nil {
		after, err := settledRSS(ctx, rg.srv.pid())
		if err != nil {
			return err
		}
		res.Figures["server_rss_before_kib"] = float64(before)
		res.Figures["server_rss_after_kib"] = float64(after)
		res.Figures["server_kib_per_conn"] = float64(after-before) / float64(cfg.Clients)
	}
	if self, err := statusKiB("/proc/self/status", "VmRSS"); err == nil {
		res.Figures["bench_rss_kib"] = float64(self)
	}
	// Every connection must still be the first one made.
	for i, c := range clients {
		st := c.Stats()
		if c.Err() != nil || st.Connects != 1 {
			res.ErrorCount++
			if len(res.Errors) < keepErrors {
				res.Errors = append(res.Errors, fmt.Sprintf("connection %d: %d connects, err %v", i, st.Connects, c.Err()))
			}
		}
	}
	res.Count, res.Unit = int64(cfg.Clients), "conns/s"
	res.Counts["connections"] = int64(cfg.Clients)
	return nil
}

// settledRSS reads process pid's RSS once a second until two readings in
// a row are within 1% (at most 15 readings), and returns the last.
func settledRSS(ctx context.Context, pid int) (int64, error) {
	last, err := procRSS(pid)
	if err != nil {
		return 0, err
	}
	for range 15 {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		now, err := procRSS(pid)
		if err != nil {
			return 0, err
		}
		diff := now - last
		last = now
		if diff < 0 {
			diff = -diff
		}
		if diff*100 <= now {
			break
		}
	}
	return last, nil
}
