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

// fdReserve is what a process of this tool, or a server it starts, keeps of
// its file descriptor limit lim for other than idle connections (its broker
// connections, store files, listeners).
func fdReserve(lim int) int { return min(1000, lim/4) }

// fdLimit returns this process's hard limit of open files (0 if unknown or
// unlimited).
func fdLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max > 1<<30 {
		return 0
	}
	return int(lim.Max)
}

// runIdle opens cfg.Clients authenticated connections that only keep
// alive, holds them for cfg.Duration, and measures the server's resident
// memory per connection: (RSS with them − RSS before) ÷ connections, each
// RSS read once it has settled. More connections than cfg.ConnsPerProcess
// are spread over several processes (runIdleSpread).
func runIdle(ctx context.Context, cfg Config, res *Result) error {
	if cfg.Clients > cfg.ConnsPerProcess {
		if cfg.Target != "" {
			return fmt.Errorf("%d connections are more than one process holds here (--conns-per-process %d, from the file descriptor limit ulimit -Hn): only a run that starts its own server spreads them over processes", cfg.Clients, cfg.ConnsPerProcess)
		}
		return runIdleSpread(ctx, cfg, res)
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
	rec := newRecorder() // connect + authenticate times
	var open atomic.Int64
	start := time.Now()
	prog := newProgress(cfg, start, rec, func() string { return fmt.Sprintf("%d open", open.Load()) })
	cpu := startCPU(rg.srv)
	clients, err := openIdle(ctx, rg, cfg, rec, &open)
	defer closeAll(clients)
	res.CPU = cpu.end()
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		prog.stop()
		return fmt.Errorf("after %d connections: %w", open.Load(), err)
	}
	res.Latency = latency(rec.total()) // connect + auth
	// Hold them, then measure.
	if res.Timeline, err = hold(ctx, cfg.Duration, prog); err != nil {
		return err
	}
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
	errs, n := checkIdle(clients, cfg.FirstClient)
	res.Errors, res.ErrorCount = errs, n
	res.Count, res.Unit = int64(cfg.Clients), "conns/s"
	res.Counts["connections"] = int64(cfg.Clients)
	return nil
}

// hold waits d (or until ctx ends, an error), then stops prog and returns
// its timeline.
func hold(ctx context.Context, d time.Duration, prog *progress) ([]Point, error) {
	select {
	case <-time.After(d):
		return prog.stop(), nil
	case <-ctx.Done():
		prog.stop()
		return nil, ctx.Err()
	}
}

// openIdle opens cfg.Clients connections to rg, numbered from
// cfg.FirstClient (the number picks the user, the device and the source
// address), recording each one's connect and authenticate time in rec and
// counting it in open. On an error the clients opened so far are returned
// with it.
func openIdle(ctx context.Context, rg *rig, cfg Config, rec *recorder, open *atomic.Int64) ([]*client.Client, error) {
	clients := make([]*client.Client, cfg.Clients)
	err := parallel(ctx, cfg.Clients, func(i int) error {
		n := cfg.FirstClient + i
		t0 := time.Now()
		c, err := rg.dial(ctx, n, fmt.Sprintf("idle%06d", n/idleDevices), fmt.Sprintf("d%d", n%idleDevices), nil)
		if err != nil {
			return err
		}
		now := time.Now()
		rec.record(i, now, now.Sub(t0))
		clients[i] = c
		open.Add(1)
		return nil
	})
	return clients, err
}

// checkIdle returns the errors of held connections (numbered from first):
// every one must still be open, on the first connection it made.
func checkIdle(clients []*client.Client, first int) (errs []string, n int64) {
	for i, c := range clients {
		st := c.Stats()
		if c.Err() != nil || st.Connects != 1 {
			n++
			if len(errs) < keepErrors {
				errs = append(errs, fmt.Sprintf("connection %d: %d connects, err %v", first+i, st.Connects, c.Err()))
			}
		}
	}
	return errs, n
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
