package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/sequencer"
)

func TestFlagsFromEnv(t *testing.T) {
	fs := newFlags("test")
	dataDir := fs.String("data-dir", "default", "")
	listen := fs.String("broker-listen", "default", "")
	n := fs.Int("partitions", 1, "")
	t.Setenv("PARLEY_DATA_DIR", "/from/env")
	t.Setenv("PARLEY_BROKER_LISTEN", "127.0.0.1:1")
	if err := parse(fs, []string{"--broker-listen", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if *dataDir != "/from/env" || *listen != "127.0.0.1:2" || *n != 1 {
		t.Fatalf("data-dir %q, broker-listen %q, partitions %d: env applies, the command line wins", *dataDir, *listen, *n)
	}

	fs = newFlags("test")
	fs.Int("partitions", 1, "")
	t.Setenv("PARLEY_PARTITIONS", "many")
	if err := parse(fs, nil); err == nil {
		t.Fatal("a bad PARLEY_PARTITIONS was accepted")
	}
	fs = newFlags("test")
	if err := parse(fs, []string{"stray"}); err == nil {
		t.Fatal("a stray argument was accepted")
	}
}

func TestLingerFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{nil, sequencer.DefaultLinger},
		{[]string{"--linger", "20ms"}, 20 * time.Millisecond},
		{[]string{"--linger", "0"}, -1}, // the Config's "none"
	} {
		fs := newFlags("test")
		linger := lingerFlag(fs)
		if err := parse(fs, c.args); err != nil {
			t.Fatal(err)
		}
		if d, err := linger(); err != nil || d != c.want {
			t.Fatalf("%v gave %v, %v; want %v", c.args, d, err, c.want)
		}
	}
	// Refused before the role touches the broker.
	err := runSequencer(context.Background(), []string{"--linger", "-1ms"})
	if err == nil || !strings.Contains(err.Error(), "--linger -1ms: must not be negative") {
		t.Fatalf("--linger -1ms: %v", err)
	}
	err = runSequencer(context.Background(), []string{"--state-cache-mb", "0"})
	if err == nil || !strings.Contains(err.Error(), "--state-cache-mb 0: must be at least 1") {
		t.Fatalf("--state-cache-mb 0: %v", err)
	}
}

func TestStateSyncFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, sequencer.DefaultStateSyncRecords},
		{[]string{"--state-sync-records", "5000"}, 5000},
	} {
		fs := newFlags("test")
		sync := stateSyncFlag(fs)
		if err := parse(fs, c.args); err != nil {
			t.Fatal(err)
		}
		if n, err := sync(); err != nil || n != c.want {
			t.Fatalf("%v gave %d, %v; want %d", c.args, n, err, c.want)
		}
	}
	// Refused before the role touches the broker.
	err := runSequencer(context.Background(), []string{"--state-sync-records", "0"})
	if err == nil || !strings.Contains(err.Error(), "--state-sync-records 0: must be at least 1") {
		t.Fatalf("--state-sync-records 0: %v", err)
	}
}

func TestCommitIntervalFlag(t *testing.T) {
	fs := newFlags("test")
	interval := commitIntervalFlag(fs)
	if err := parse(fs, []string{"--commit-interval", "250ms"}); err != nil {
		t.Fatal(err)
	}
	if d, err := interval(); err != nil || d != 250*time.Millisecond {
		t.Fatalf("--commit-interval 250ms gave %v, %v", d, err)
	}
	fs = newFlags("test")
	interval = commitIntervalFlag(fs)
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if d, err := interval(); err != nil || d != kafka.CommitInterval {
		t.Fatalf("the default gave %v, %v; want kafka.CommitInterval", d, err)
	}
	// Too short, from the command line or the environment, is refused by
	// both roles before they touch the broker or the store.
	roles := map[string]struct {
		run  func(context.Context, []string) error
		args []string
	}{
		"writer": {runWriter, nil},
		"fanout": {runFanout, []string{"--push-secret", "0123456789abcdef"}},
	}
	for name, r := range roles {
		err := r.run(context.Background(), append([]string{"--commit-interval", "0"}, r.args...))
		if err == nil || !strings.Contains(err.Error(), "--commit-interval 0s: must be at least 100ms") {
			t.Fatalf("%s --commit-interval 0: %v", name, err)
		}
		t.Setenv("PARLEY_COMMIT_INTERVAL", "99ms")
		err = r.run(context.Background(), r.args)
		if err == nil || !strings.Contains(err.Error(), "--commit-interval 99ms: must be at least") {
			t.Fatalf("%s with PARLEY_COMMIT_INTERVAL=99ms: %v", name, err)
		}
		os.Unsetenv("PARLEY_COMMIT_INTERVAL")
	}
}
