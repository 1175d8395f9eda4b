package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/testutil"
)

// parleyBin is the binary the scenarios start as `parley dev`, built once.
var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-bench-test-")
	if err != nil {
		panic(err)
	}
	parleyBin, err = testutil.BuildParley(dir)
	if err != nil {
		os.RemoveAll(dir)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Every scenario at a small size: each runs against a real `parley dev`
// (or, for rebuild and sequencer, a real embedded broker), passes its own
// checks, and counts what it should.
func TestScenarios(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		check func(t *testing.T, res *Result)
	}{
		// 4 s: the trend's two quarters are a second each, so that a
		// stall of the machine under the whole suite is unlikely to leave
		// one empty.
		{Config{Scenario: "dm", Clients: 10, Duration: 4 * time.Second}, func(t *testing.T, res *Result) {
			// Every acked message reaches the pair and the sender's own device.
			if res.Counts["acked"] == 0 || res.Count != res.Counts["acked"] || res.Counts["deliveries_to_own_device"] != res.Counts["acked"] {
				t.Errorf("counts %v; want every acked message delivered to the pair and to its sender", res.Counts)
			}
			if res.Latency == nil || res.AckLatency == nil || res.Latency.P50 <= 0 {
				t.Errorf("latency %+v, ack %+v", res.Latency, res.AckLatency)
			}
			// Deliveries in both compared quarters of the sending.
			if tr := res.Trend; tr == nil || tr.EarlyCount == 0 || tr.LateCount == 0 || tr.EarlyP50 <= 0 || tr.LateP50 <= 0 || tr.WhileSending <= 0 {
				t.Errorf("trend %+v", res.Trend)
			}
		}},
		{Config{Scenario: "dm", Clients: 4, Rate: 40, Duration: 2 * time.Second}, func(t *testing.T, res *Result) {
			// A fixed rate: 40/s for 2 s is 80 messages, give or take the
			// phase of each sender's schedule.
			if a := res.Counts["acked"]; a < 76 || a > 80 {
				t.Errorf("%d messages acked at 40/s for 2s; want about 80", a)
			}
		}},
		{Config{Scenario: "group", Members: 20, Senders: 2, Rate: 20, Duration: 4 * time.Second}, func(t *testing.T, res *Result) {
			if a := res.Counts["acked"]; a == 0 || res.Count != a*19 {
				t.Errorf("%d deliveries to others of %d messages; want 19 each", res.Count, a)
			}
			if tr := res.Trend; tr == nil || tr.EarlyCount == 0 || tr.LateCount == 0 {
				t.Errorf("trend %+v", res.Trend)
			}
		}},
		{Config{Scenario: "idle", Clients: 50, Duration: time.Second}, func(t *testing.T, res *Result) {
			if res.Count != 50 || res.Figures["server_kib_per_conn"] <= 0 {
				t.Errorf("count %d, figures %v", res.Count, res.Figures)
			}
		}},
		{Config{Scenario: "catchup", Events: 3000, Convs: 3}, func(t *testing.T, res *Result) {
			if res.Count != 3000 || res.Counts["history_pages"] < 3 {
				t.Errorf("count %d, counts %v; want 3,000 events in pages of at most 1,000", res.Count, res.Counts)
			}
		}},
		{Config{Scenario: "rebuild", Events: 5000, Convs: 50}, func(t *testing.T, res *Result) {
			if res.Count != 5000 {
				t.Errorf("rebuilt %d events, want 5,000", res.Count)
			}
		}},
		{Config{Scenario: "sequencer", Events: 5000, Convs: 50}, func(t *testing.T, res *Result) {
			if res.Count != 5000 || res.Counts["events"] != 5000 || res.Figures["txcopy_records_per_s"] <= 0 {
				t.Errorf("count %d, counts %v, figures %v", res.Count, res.Counts, res.Figures)
			}
			// The restart on the kept store reads nothing of the
			// changelog; the one on an empty store reads all of it.
			if kept, empty := res.Counts["restart_kept_store_restored"], res.Counts["restart_empty_store_restored"]; kept != 0 || empty < 50 ||
				res.Figures["restart_kept_store_s"] <= 0 || res.Figures["restart_empty_store_s"] <= 0 {
				t.Errorf("restarts: restored %d from the kept store, %d from an empty one; figures %v", kept, empty, res.Figures)
			}
		}},
		{Config{Scenario: "loopback", Clients: 30, Rate: 3000, Duration: time.Second}, func(t *testing.T, res *Result) {
			// 3,000 frames/s for a second, every one received and checked.
			if n := res.Counts["frames"]; n < 2900 || n > 3000 || res.Count != n {
				t.Errorf("%d frames received of %d written; want all of about 3,000", res.Count, n)
			}
			if res.Figures["cpu_us_per_frame"] <= 0 || res.Figures["dm_ceiling_msgs_per_s"] <= 0 || res.Latency == nil {
				t.Errorf("figures %v, latency %+v", res.Figures, res.Latency)
			}
		}},
		{Config{Scenario: "loopback", Clients: 7, Duration: time.Second}, func(t *testing.T, res *Result) {
			// Unpaced, with more writers than one when the machine has the cores.
			if res.Count == 0 || res.Count != res.Counts["frames"] {
				t.Errorf("%d frames received of %d written", res.Count, res.Counts["frames"])
			}
		}},
	} {
		t.Run(tc.cfg.Scenario, func(t *testing.T) {
			cfg := tc.cfg
			cfg.ParleyBin = parleyBin
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			WriteText(&text, res)
			t.Log(text.String())
			if !res.OK || res.ErrorCount != 0 {
				t.Fatalf("the run failed its checks")
			}
			if res.Seconds <= 0 || res.Rate <= 0 || res.Unit == "" || res.Machine.Speed == nil {
				t.Errorf("seconds %v, rate %v %q, machine %+v", res.Seconds, res.Rate, res.Unit, res.Machine)
			}
			tc.check(t, res)
		})
	}
}

// An idle run with more connections than one process holds is spread
// over parley dev, connector nodes on its broker, and as many worker
// processes of the tool, each worker's share on its own node.
func TestIdleSpread(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Scenario: "idle", Clients: 45, ConnsPerProcess: 20, Duration: time.Second, ParleyBin: parleyBin})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	WriteText(&text, res)
	t.Log(text.String())
	if !res.OK || res.Count != 45 || res.Params.Processes != 3 || res.Counts["server_processes"] != 3 {
		t.Fatalf("the spread run: ok %v, count %d, params %+v, counts %v", res.OK, res.Count, res.Params, res.Counts)
	}
	for _, node := range []string{"dev", "bench-node-1", "bench-node-2"} {
		if n := res.Counts["connections_at_"+node]; n != 15 {
			t.Errorf("%d connections at %s; want 15 (counts %v)", n, node, res.Counts)
		}
	}
	if res.Latency == nil || res.Latency.Count != 45 || res.Figures["server_kib_per_conn"] <= 0 || res.Figures["bench_rss_kib"] <= 0 {
		t.Errorf("latency %+v, figures %v", res.Latency, res.Figures)
	}

	// Server flags would reach parley dev only, not the connector nodes.
	_, err = Run(ctx, Config{Scenario: "idle", Clients: 45, ConnsPerProcess: 20, ServerArgs: []string{"--max-conns-per-user", "100"}, ParleyBin: parleyBin})
	if err == nil || !strings.Contains(err.Error(), "--server-args go to parley dev only") {
		t.Errorf("a spread run with server flags: %v", err)
	}
	// A node the tool did not start cannot be spread over.
	_, err = Run(ctx, Config{Scenario: "idle", Clients: 45, ConnsPerProcess: 20, Target: "ws://127.0.0.1:1/v1/ws", TokenSecret: "s"})
	if err == nil || !strings.Contains(err.Error(), "spreads them over processes") {
		t.Errorf("a target with more connections than a process holds: %v", err)
	}
	if lim := fdLimit(); lim > 0 {
		_, err = Run(ctx, Config{Scenario: "idle", Clients: 10, ConnsPerProcess: lim})
		if err == nil || !strings.Contains(err.Error(), "ulimit -Hn") {
			t.Errorf("more connections per process than file descriptors: %v", err)
		}
	}
}

// The command line: a run's text, JSON and plots, and a failing exit
// status for bad input.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	js, svg, png := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg"), filepath.Join(dir, "r.png")
	out, err := exec.Command(parleyBin, "bench", "dm", "--clients", "4", "--duration", "2s", "--quiet", "--json", js, "--plot", svg, "--server-env", "GOGC=150").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "parley bench dm: ok") || !strings.Contains(string(out), "latency   p50") || !strings.Contains(string(out), " server-env=GOGC=150") {
		t.Errorf("output:\n%s", out)
	}
	var res Result
	b, err := os.ReadFile(js)
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	if err != nil || !res.OK || res.Scenario != "dm" || res.Latency == nil || len(res.Timeline) == 0 {
		t.Errorf("JSON result %+v (%v)", res, err)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("latency (ms)")) {
		t.Errorf("plot %s: %v, %.100q", svg, err, b)
	}
	if err := Plot(&res, png); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("plot %s: %v", png, err)
	}
	if err := Plot(&res, filepath.Join(dir, "r.gif")); err == nil {
		t.Error("a .gif plot: no error")
	}

	for _, args := range [][]string{
		{"bench"},
		{"bench", "chat"},
		{"bench", "dm", "--clients", "3"},
		{"bench", "group", "--members", "2", "--senders", "3"},
		{"bench", "dm", "--rate", "-1"},
		{"bench", "dm", "--target", "ws://127.0.0.1:1/v1/ws"},
		{"bench", "rebuild", "--target", "ws://127.0.0.1:1/v1/ws", "--token-secret", "s"},
		{"bench", "catchup", "--events", "5", "--convs", "10"},
		{"bench", "dm", "--target", "http://127.0.0.1:1/", "--token-secret", "s"},
		{"bench", "dm", "--worker"},
		{"bench", "idle", "--worker", "--clients", "5"},
		{"bench", "idle", "--worker", "--target", "ws://127.0.0.1:1/v1/ws", "--token-secret", "s", "--clients", "30", "--conns-per-process", "10"},
	} {
		out, err := exec.Command(parleyBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "parley:") {
			t.Errorf("parley %v: %v\n%s; want a failure with its reason", args, err, out)
		}
	}
}

// --server-env reaches the servers the tool starts, parley dev and a
// connector node, and bad entries or runs without a server are refused.
func TestServerEnv(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := []string{"GOGC=150", "BENCH_TEST_ENV=a b"}
	secret := strings.Repeat("s", 48)
	dev, err := startServer(ctx, parleyBin, secret, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.stop()
	node, err := startConnector(ctx, parleyBin, secret, dev.broker, 1, env)
	if err != nil {
		t.Fatal(err)
	}
	defer node.stop()
	for _, s := range []*server{dev, node} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.pid()))
		if err != nil {
			t.Fatal(err)
		}
		vars := strings.Split(string(b), "\x00")
		for _, kv := range env {
			if !slices.Contains(vars, kv) {
				t.Errorf("%s lacks %q in its environment", s.name, kv)
			}
		}
	}

	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scenario: "dm", ServerEnv: []string{"GOGC"}}, "want NAME=value"},
		{Config{Scenario: "dm", ServerEnv: []string{"=200"}}, "want NAME=value"},
		{Config{Scenario: "dm", ServerEnv: []string{"GO GC=200"}}, "want NAME=value"},
		{Config{Scenario: "sequencer", ServerEnv: []string{"GOGC=200"}}, "starts no server"},
		{Config{Scenario: "dm", ServerEnv: []string{"GOGC=200"}, Target: "ws://127.0.0.1:1/v1/ws", TokenSecret: "s"}, "not for a target"},
	} {
		if _, err := Run(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s with server environment %q and target %q: %v; want %q", tc.cfg.Scenario, tc.cfg.ServerEnv, tc.cfg.Target, err, tc.want)
		}
	}
}
