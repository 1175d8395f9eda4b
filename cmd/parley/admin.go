package main

import (
	"context"
	"flag"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/admin"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/store"
)

func adminFlag(fs *flag.FlagSet) *string {
	return fs.String("admin-listen", "", "address of the admin endpoints /healthz, /readyz, /metrics and /debug/pprof/ (not public; empty: off)")
}

// newRegistry returns the metrics registry of one process: its roles
// register their metrics in it, with the Go runtime's and the process's.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// runWithAdmin runs role until ctx ends, with the admin endpoints on addr
// (if set): /readyz checks the log, the store if it can be pinged, and the
// role's own checks in more; /metrics serves reg.
func runWithAdmin(ctx context.Context, addr string, k kafka.Config, st store.Store, log *slog.Logger, reg prometheus.Gatherer, role func(context.Context) error, more ...map[string]admin.Check) error {
	if addr == "" {
		return role(ctx)
	}
	cl, err := kgo.NewClient(k.ClientOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	checks := map[string]admin.Check{"log": cl.Ping}
	if p, ok := st.(interface{ Ping(context.Context) error }); ok {
		checks["store"] = p.Ping
	}
	for _, m := range more {
		for name, c := range m {
			checks[name] = c
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var adminErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if adminErr = admin.Serve(ctx, addr, checks, reg, log); adminErr != nil {
			cancel()
		}
	}()
	err = role(ctx)
	cancel()
	wg.Wait()
	if err == nil {
		err = adminErr
	}
	return err
}
