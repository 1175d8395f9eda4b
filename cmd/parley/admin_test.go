package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

// TestAdminMetrics: a role process serves its registry at /metrics on the
// admin listener: the skipped-records counter of each role, by topic and
// reason (zero until a record is skipped), and the Go runtime's metrics.
func TestAdminMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	k := kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// The roles of one process share its registry (as parley dev's do).
	reg := newRegistry()
	if _, err := sequencer.New(sequencer.Config{Kafka: k, Logger: log, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.New(writer.Config{Kafka: k, Logger: log, Registerer: reg}, st); err != nil {
		t.Fatal(err)
	}
	if _, err := fanout.New(fanout.Config{Kafka: k, Logger: log, Registerer: reg, PushSecret: []byte(strings.Repeat("p", 16))}, st); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runWithAdmin(ctx, addr, k, nil, log, reg, func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var body string
	cl := &http.Client{Timeout: 5 * time.Second}
	testutil.WaitFor(t, 10*time.Second, "/metrics", func() bool {
		resp, err := cl.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	for _, want := range []string{
		`parley_records_skipped_total{reason="undecodable",role="sequencer",topic="parley.commands"} 0`,
		`parley_records_skipped_total{reason="malformed",role="writer",topic="parley.events"} 0`,
		`parley_records_skipped_total{reason="out_of_sequence",role="fanout",topic="parley.events"} 0`,
		`parley_records_skipped_total{reason="malformed",role="fanout",topic="parley.presence"} 0`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
