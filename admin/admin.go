// Package admin serves a role's operational endpoints: /healthz (the
// process is up), /readyz (what the role depends on answers: the log, the
// store) and /metrics (the role's Prometheus metrics, in the text
// exposition format) and /debug/pprof/ (Go's profiles: CPU, heap,
// allocations, goroutines…). It is meant for a listener that is not
// public.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether one dependency is reachable.
type Check func(ctx context.Context) error

// CheckTimeout bounds each check of a /readyz request.
const CheckTimeout = 2 * time.Second

// Handler returns the admin endpoints for the given named checks, and
// /metrics serving what metrics gathers (nil: no /metrics).
func Handler(checks map[string]Check, metrics prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		results := run(r.Context(), checks)
		names := make([]string, 0, len(results))
		for n := range results {
			names = append(names, n)
		}
		sort.Strings(names)
		status := map[string]string{}
		var failed []string
		for _, n := range names {
			if err := results[n]; err != nil {
				status[n] = err.Error()
				failed = append(failed, n+": "+err.Error())
			} else {
				status[n] = "ok"
			}
		}
		if len(failed) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{
				"code": "unavailable", "message": "not ready: " + failed[0], "checks": status,
			})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "checks": status})
	})
	return mux
}

func run(ctx context.Context, checks map[string]Check) map[string]error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]error, len(checks))
	for name, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, CheckTimeout)
			defer cancel()
			err := check(cctx)
			if err == nil && cctx.Err() != nil {
				err = cctx.Err()
			}
			mu.Lock()
			out[name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve listens on addr and serves Handler(checks, metrics) until ctx
// ends. It logs the address it listens on (useful with port 0).
func Serve(ctx context.Context, addr string, checks map[string]Check, metrics prometheus.Gatherer, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: Handler(checks, metrics), ReadHeaderTimeout: 5 * time.Second}
	log.Info("admin endpoints listening", "addr", ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
