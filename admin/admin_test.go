package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadyz(t *testing.T) {
	storeErr := errors.New("no hosts available")
	var down atomic.Bool
	srv := httptest.NewServer(Handler(map[string]Check{
		"log": func(context.Context) error { return nil },
		"store": func(context.Context) error {
			if down.Load() {
				return storeErr
			}
			return nil
		},
	}, nil))
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 200 || body["ok"] != true {
		t.Fatalf("/readyz %d %v", code, body)
	}
	down.Store(true)
	code, body := get("/readyz")
	if code != 503 || body["code"] != "unavailable" || body["checks"].(map[string]any)["store"] != storeErr.Error() {
		t.Fatalf("/readyz with the store down: %d %v", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz with the store down: %d", code)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_records_skipped_total", Help: "h"}, []string{"role", "topic", "reason"})
	reg.MustRegister(c)
	c.WithLabelValues("writer", "parley.events", "malformed").Add(3)
	get := func(h http.Handler) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get(Handler(nil, reg))
	want := `parley_records_skipped_total{reason="malformed",role="writer",topic="parley.events"} 3`
	if code != 200 || !strings.Contains(body, want) {
		t.Fatalf("/metrics %d:\n%s\nwant a line %s", code, body, want)
	}
	if code, _ := get(Handler(nil, nil)); code != 404 {
		t.Fatalf("/metrics without a registry: %d, want 404", code)
	}
}

func TestPprof(t *testing.T) {
	srv := httptest.NewServer(Handler(nil, nil))
	defer srv.Close()
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/cmdline":           "",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %.80q; want 200 with %q", path, resp.StatusCode, b, want)
		}
	}
	// A CPU profile of one second is a gzipped protobuf.
	resp, err := http.Get(srv.URL + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("CPU profile: %d, %d bytes starting %x; want a gzip stream", resp.StatusCode, len(b), b[:min(len(b), 2)])
	}
}
