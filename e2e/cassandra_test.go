package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
	"github.com/parley-im/parley/writer"
)

// cassandraArgs are the writer flags for cfg's keyspace.
func cassandraArgs(cfg cassandrastore.Config) []string {
	return []string{"--cassandra", fmt.Sprintf("%s:%d", cfg.Hosts[0], cfg.Port), "--keyspace", cfg.Keyspace}
}

func openCassandra(t testing.TB, cfg cassandrastore.Config) *cassandrastore.Store {
	t.Helper()
	st, err := cassandrastore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestWriterOnCassandraKilled is the core pipeline run with the writer on
// the real Cassandra: 100,000 sends (5% retried) through the sequencer, the
// writer a child process killed with SIGKILL mid-stream and restarted; the
// store must end equal to the log.
func TestWriterOnCassandraKilled(t *testing.T) {
	cfg := cstest.NewKeyspace(t)
	c := newCluster(t)
	w := newWorkload(nConvs, nSenders, nSends, retryFrac, 5)
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-cass").Run)
	args := append([]string{"writer", "--brokers", c.broker.Addr(), "--log-level", "warn"}, cassandraArgs(cfg)...)
	wr := startChild(t, "writer-1", args...)
	start := time.Now()
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, 3*time.Minute, "a third of the outcomes", func() bool { return outs.count() >= w.commands()/3 })
	st := openCassandra(t, cfg)
	waitFor(t, time.Minute, "the writer to be writing", func() bool {
		empty, err := st.Empty(context.Background())
		return err == nil && !empty
	})
	wr.kill()
	t.Logf("writer killed after %v", time.Since(start))
	wr = startChild(t, "writer-2", args...)
	waitFor(t, 3*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	waitFor(t, 5*time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })
	t.Logf("%d commands written to Cassandra in %v", w.commands(), time.Since(start))
	wr.stop()
	w.check(t, c.events(), outs, st)
}

// readyz returns the status code of GET /readyz at addr (0 if unreachable).
func readyz(addr string) int {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestCassandraOutage kills Cassandra (SIGKILL of its pid) while commands
// flow and restarts it: the writer pauses and retries, /readyz reports the
// outage, the writer's lag grows and then drains, and the store ends equal
// to the log with nothing lost or doubled.
func TestCassandraOutage(t *testing.T) {
	node := cstest.Launch(t)
	cfg := cassandrastore.Config{Hosts: []string{"127.0.0.1"}, Port: node.Port, Keyspace: "parley", Timeout: 10 * time.Second}
	c := newCluster(t)
	w := newWorkload(200, 100, 20_000, retryFrac, 6)
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-outage").Run)
	adminAddr := testutil.FreeAddr(t)
	wr := startChild(t, "writer", append([]string{"writer", "--brokers", c.broker.Addr(), "--log-level", "warn",
		"--migrate", "--admin-listen", adminAddr}, cassandraArgs(cfg)...)...)
	waitFor(t, time.Minute, "/readyz to answer 200", func() bool { return readyz(adminAddr) == 200 })

	half := len(w.sends) / 2
	c.produce(w.creates...)
	c.produce(w.sends[:half]...)
	waitFor(t, 2*time.Minute, "the first half stored", func() bool {
		return outs.answered() >= len(w.creates)+half && c.groupCaughtUp("parley-writer", c.kc.Topics().Events)
	})

	node.Kill()
	waitFor(t, 30*time.Second, "/readyz to report the outage", func() bool { return readyz(adminAddr) == 503 })
	c.produce(w.sends[half:]...)
	waitFor(t, 2*time.Minute, "every outcome (the sequencer does not need the store)", func() bool { return outs.answered() >= w.commands() })
	if c.groupCaughtUp("parley-writer", c.kc.Topics().Events) {
		t.Fatal("the writer caught up while Cassandra was down")
	}
	lagDown := c.writerLag()
	t.Logf("writer lag with Cassandra down: %d events", lagDown)
	if lagDown == 0 {
		t.Fatal("no writer lag while Cassandra was down")
	}

	node.Restart()
	waitFor(t, time.Minute, "/readyz to recover", func() bool { return readyz(adminAddr) == 200 })
	waitFor(t, 3*time.Minute, "the writer's lag to drain", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })
	wr.stop()
	w.check(t, c.events(), outs, openCassandra(t, cfg))
}

// TestOutsideClientReadsTheStore: a CQL client nobody here wrote (the
// DataStax Python driver, through scripts/cql-timeline) reads a
// conversation's timeline as the writer stored it in Cassandra, and it
// matches the events topic.
func TestOutsideClientReadsTheStore(t *testing.T) {
	cfg := cstest.NewKeyspace(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Fatal("no /usr/bin/python3: ./scripts/test installs it with python3-cassandra")
	}
	c := newCluster(t)
	w := newWorkload(3, 6, 1500, 0.05, 7) // a few conversations, each over two buckets or more
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-py").Run)
	st := openCassandra(t, cfg)
	wr, err := writer.New(writer.Config{Kafka: c.kc, Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "writer", wr.Run)
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	waitFor(t, time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })

	pbDir := t.TempDir()
	root := filepath.Join("..")
	if out, err := exec.Command("protoc", "--python_out="+pbDir, "-I", filepath.Join(root, "schema"),
		filepath.Join(root, "schema/parley/v1/event.proto")).CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	events := c.events()
	conv := w.convs[0]
	var want []*parleyv1.Event
	for _, ev := range events {
		if ev.Conv == conv {
			want = append(want, ev)
		}
	}
	cmd := exec.Command(filepath.Join(root, "scripts/cql-timeline"), cfg.Hosts[0], strconv.Itoa(cfg.Port), cfg.Keyspace, conv, pbDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/cql-timeline: %v\n%s", err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) || len(want) < 300 {
		t.Fatalf("the Python client read %d events of %s, the log has %d", len(lines), conv, len(want))
	}
	for i, line := range lines {
		var got struct {
			Seq   int64           `json:"seq"`
			Type  string          `json:"type"`
			MsgID string          `json:"msg_id"`
			From  string          `json:"from"`
			TS    int64           `json:"ts"`
			CMID  string          `json:"cmid"`
			Body  json.RawMessage `json:"body"`
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		ev := want[i]
		body := string(ev.Body)
		if body == "" {
			body = "null"
		}
		if got.Seq != ev.Seq || got.Type != schema.EventTypeName(ev.Type) || got.MsgID != ev.MsgId || got.From != ev.From ||
			got.TS != ev.Ts || got.CMID != ev.Cmid || !jsonEqual(got.Body, []byte(body)) {
			t.Fatalf("the Python client read %s, the log has %v", line, ev)
		}
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// TestDevAndRebuildOnCassandra runs `parley dev --store cassandra` (the
// all-in-one node with its timeline store in Cassandra), then
// `parley rebuild` into a second, empty keyspace: both hold the log.
func TestDevAndRebuildOnCassandra(t *testing.T) {
	cfg := cstest.NewKeyspace(t)
	rebuilt := cstest.NewKeyspace(t)
	dataDir := t.TempDir()
	cmd := exec.Command(parleyBin, append([]string{"dev", "--data-dir", dataDir, "--broker-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--partitions", "8", "--log-level", "warn", "--store", "cassandra"}, cassandraArgs(cfg)...)...)
	addr := startPrinting(t, cmd)
	c := &cluster{t: t, kc: kafka.Config{Brokers: []string{addr}, Logger: testLogger(t)}.WithDefaults()}
	w := newWorkload(20, 10, 2000, retryFrac, 8)
	collecting, stopCollecting := context.WithCancel(context.Background())
	outs := c.collectOutcomes(collecting)
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	waitFor(t, time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })
	events := c.events()
	w.check(t, events, outs, openCassandra(t, cfg))

	out, err := exec.Command(parleyBin, append([]string{"rebuild", "--brokers", addr, "--log-level", "warn"}, cassandraArgs(rebuilt)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("parley rebuild: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	w.check(t, events, nil, openCassandra(t, rebuilt))
	// Rebuilding into a keyspace that holds data is refused.
	if out, err := exec.Command(parleyBin, append([]string{"rebuild", "--brokers", addr}, cassandraArgs(rebuilt)...)...).CombinedOutput(); err == nil {
		t.Fatalf("parley rebuild into a full keyspace succeeded:\n%s", out)
	}
	// --force replays over it (as after a failed rebuild): idempotent.
	if out, err := exec.Command(parleyBin, append([]string{"rebuild", "--force", "--brokers", addr}, cassandraArgs(rebuilt)...)...).CombinedOutput(); err != nil {
		t.Fatalf("parley rebuild --force: %v\n%s", err, out)
	}
	w.check(t, events, nil, openCassandra(t, rebuilt))
	stopCollecting()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("parley dev on SIGTERM: %v", err)
	}
}
