package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

// The benchmarks' workload: one iteration is one whole run over a fixed
// set of records (about 525,000 commands: 200 creates, 500,000 sends and
// 5% retries), so a single iteration takes a few seconds and the rates are
// records processed over the time measured. Setup (starting brokers,
// producing the input) is outside the timer.
const (
	benchConvs     = 200
	benchSenders   = 200
	benchSends     = 500_000
	benchRetryFrac = 0.05
	// benchTimeout bounds every wait, so a stuck run fails instead of
	// hanging the benchmark.
	benchTimeout = 3 * time.Minute
)

// benchRun numbers the benchmarks' consumer groups and store directories,
// which must differ between iterations and between -count runs.
var benchRun atomic.Int64

// benchWorkload is a workload with the counts the benchmarks check against.
type benchWorkload struct {
	*workload
	events     int64 // events the sequencer must produce: creates + original sends
	duplicates int64 // retries
}

func newBenchWorkload(seed uint64) *benchWorkload {
	w := newWorkload(benchConvs, benchSenders, benchSends, benchRetryFrac, seed)
	bw := &benchWorkload{workload: w, events: int64(len(w.creates))}
	for _, cmd := range w.sends {
		if w.original[cmd.MsgId] == cmd.MsgId {
			bw.events++
		} else {
			bw.duplicates++
		}
	}
	return bw
}

// newBenchCluster starts a fresh embedded broker with Parley's topics, like
// newCluster, but returns a stop function so that a benchmark running many
// iterations holds one broker (and its data) at a time.
func newBenchCluster(b *testing.B) (c *cluster, stop func()) {
	b.Helper()
	dir, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		b.Fatal(err)
	}
	br, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: testLogger(b)})
	if err != nil {
		os.RemoveAll(dir)
		b.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			br.Close()
			os.RemoveAll(dir)
		})
	}
	b.Cleanup(stop)
	c = &cluster{t: b, broker: br, kc: kafka.Config{
		Brokers: []string{br.Addr()}, Partitions: testPartitions, Logger: testLogger(b),
	}.WithDefaults()}
	cl := c.client()
	defer cl.Close()
	if err := kafka.EnsureTopics(context.Background(), cl, c.kc); err != nil {
		b.Fatal(err)
	}
	return c, stop
}

// benchCaughtUp reports whether group's committed offsets are at most
// slack short of the end of every partition of topic: slack 0 for a topic
// written without transactions, 1 for one that ends in a transaction
// marker. (The harness's groupCaughtUp always allows 1, which on the
// commands topic could end the wait before the last transaction commits.)
func benchCaughtUp(adm *kadm.Client, group, topic string, slack int64) bool {
	ctx := context.Background()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return false
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil || committed.Error() != nil {
		return false
	}
	caught := true
	ends.Each(func(e kadm.ListedOffset) {
		if e.Offset == 0 {
			return
		}
		if o, ok := committed.Lookup(topic, e.Partition); !ok || o.At < e.Offset-slack {
			caught = false
		}
	})
	return caught
}

// benchWait polls cond every few milliseconds until it holds, failing the
// benchmark after benchTimeout.
func benchWait(b *testing.B, what string, cond func() bool) {
	b.Helper()
	testutil.WaitFor(b, benchTimeout, what, cond)
}

// benchRunSequencer runs an in-process sequencer until it has committed
// every command of w (its group's offsets are at the end of the commands
// topic), stops the timer, shuts the sequencer down and returns its stats
// and how long after the call it had first processed a command (start-up:
// topic checks, group join, state restore).
func benchRunSequencer(b *testing.B, c *cluster, w *benchWorkload, node string) (sequencer.Stats, time.Duration) {
	b.Helper()
	start := time.Now()
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: node, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("sequencer: %v", err)
		}
	}()
	total := int64(w.commands())
	cl := c.client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var startup time.Duration
	benchWait(b, "the sequencer to commit every command", func() bool {
		// Stats are cheap; the offsets are asked for only once every
		// command has been processed at least once.
		n := s.Stats().Commands
		if n > 0 && startup == 0 {
			startup = time.Since(start)
		}
		return n >= total && benchCaughtUp(adm, "parley-sequencer", c.kc.Topics().Commands, 0)
	})
	b.StopTimer() // the shutdown is not the sequencer's work
	st := s.Stats()
	if st.Aborted == 0 && (st.Events != w.events || st.Duplicates != w.duplicates || st.Rejected != 0 || st.Undecodable != 0) {
		b.Fatalf("sequencer stats %+v; want %d events and %d duplicates", st, w.events, w.duplicates)
	}
	return st, startup
}

// benchEvents starts a fresh broker and fills its events topic by running
// the sequencer over a workload; it returns the cluster and the number of
// events.
func benchEvents(b *testing.B, seed uint64) (*cluster, int64) {
	b.Helper()
	w := newBenchWorkload(seed)
	c, _ := newBenchCluster(b)
	c.produce(w.creates...)
	c.produce(w.sends...)
	if st, _ := benchRunSequencer(b, c, w, "bench-setup"); st.Aborted != 0 {
		b.Fatalf("setup: %d transactions aborted; the events topic is not the workload's", st.Aborted)
	}
	return c, w.events
}

// BenchmarkWriter times an in-process writer storing the whole events
// topic from offset 0 into a fresh Pebble store, until its group's offsets
// are at the end of the topic. Each iteration uses a new group and store.
func BenchmarkWriter(b *testing.B) {
	c, events := benchEvents(b, 12)
	storeRoot := b.TempDir()
	cl := c.client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	b.Run("pebble", func(b *testing.B) {
		b.ReportAllocs()
		b.StopTimer()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			benchWriterRun(b, c, adm, storeRoot, events)
		}
		b.ReportMetric(float64(events*int64(b.N))/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkRebuild times writer.Rebuild of the whole events topic into a
// fresh Pebble store opened with NoSync, plus the final Flush.
func BenchmarkRebuild(b *testing.B) {
	c, events := benchEvents(b, 13)
	storeRoot := b.TempDir()
	b.Run("pebble-nosync", func(b *testing.B) {
		b.ReportAllocs()
		b.StopTimer()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(storeRoot, fmt.Sprintf("rebuild-%d", benchRun.Add(1)))
			st, err := pebblestore.Open(dir, pebblestore.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			stats, err := writer.Rebuild(context.Background(), c.kc, st, 0, testLogger(b))
			if err == nil {
				err = st.Flush()
			}
			b.StopTimer()
			if err != nil {
				b.Fatalf("rebuild: %v", err)
			}
			if stats.Events != events || stats.Undecodable != 0 {
				b.Fatalf("rebuild stats %+v, want %d events", stats, events)
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(dir)
		}
		b.ReportMetric(float64(events*int64(b.N))/b.Elapsed().Seconds(), "events/s")
	})
}

// benchWriterRun is one timed writer run into a new store with a new group.
func benchWriterRun(b *testing.B, c *cluster, adm *kadm.Client, storeRoot string, events int64) {
	run := benchRun.Add(1)
	dir := filepath.Join(storeRoot, fmt.Sprintf("writer-%d", run))
	st, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			b.Error(err)
		}
		os.RemoveAll(dir)
	}()
	benchWriterInto(b, c, adm, st, run, events)
}

// benchWriterInto times a writer with a fresh group from the start of the
// events topic into st until it has stored every event.
func benchWriterInto(b *testing.B, c *cluster, adm *kadm.Client, st store.Store, run, events int64) {
	group := fmt.Sprintf("bench-writer-%d", run)
	// The timed wait ends at the commit: commit at the shortest interval.
	wr, err := writer.New(writer.Config{Kafka: c.kc, Group: group, CommitInterval: kafka.MinCommitInterval, Logger: testLogger(b)}, st)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Runs before the store closes, also when a wait below fails.
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("writer: %v", err)
		}
	}()
	b.StartTimer()
	go func() { done <- wr.Run(ctx) }()
	benchWait(b, "the writer to catch up", func() bool {
		n, _ := wr.Stored()
		return n >= events && benchCaughtUp(adm, group, c.kc.Topics().Events, 1)
	})
	b.StopTimer()
	// Replays after a failed commit would count twice.
	if n, bad := wr.Stored(); n != events || bad != 0 {
		b.Fatalf("writer stored %d events (%d undecodable), want %d", n, bad, events)
	}
}

// BenchmarkCassandra measures the writer into the real Cassandra the test
// script starts (a 256 MB-heap Cassandra 2.1 sharing this machine), and the
// latency of reading the last 50 events of a conversation, the history a
// client asks for on opening it, from Cassandra and from Pebble.
func BenchmarkCassandra(b *testing.B) {
	cfg := cstest.NewKeyspace(b)
	w := newWorkload(1000, 200, 100_000, benchRetryFrac, 13)
	c := newCluster(b)
	runSeq(b, c, w)
	events := int64(len(w.creates))
	for _, cmd := range w.sends {
		if w.original[cmd.MsgId] == cmd.MsgId {
			events++
		}
	}
	cl := c.client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	st, err := cassandrastore.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	b.Run("writer", func(b *testing.B) {
		if b.N > 1 {
			b.Skip("one run fills the keyspace; use -benchtime 1x")
		}
		b.StopTimer()
		b.ResetTimer()
		benchWriterInto(b, c, adm, st, benchRun.Add(1), events)
		b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	})
	peb, err := pebblestore.Open(b.TempDir(), pebblestore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer peb.Close()
	if _, err := writer.Rebuild(context.Background(), c.kc, peb, 10000, testLogger(b)); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		st   store.Store
	}{{"history-last50/cassandra", st}, {"history-last50/pebble", peb}} {
		b.Run(tc.name, func(b *testing.B) { benchHistory(b, tc.st, w.convs) })
	}
}

// runSeq sequences w's commands in-process, outside any timer.
func runSeq(b *testing.B, c *cluster, w *workload) {
	outs := c.collectOutcomes(context.Background())
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: fmt.Sprintf("bench-%d", benchRun.Add(1)), Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c.produce(w.creates...)
	c.produce(w.sends...)
	benchWait(b, "every outcome", func() bool { return outs.answered() >= w.commands() })
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// benchHistory reads the last 50 events of random conversations, one
// request at a time, and reports latency percentiles.
func benchHistory(b *testing.B, st store.Store, convs []string) {
	ctx := context.Background()
	n := max(b.N, 2000)
	lat := make([]time.Duration, 0, n)
	b.ResetTimer()
	for i := range n {
		conv := convs[(i*7919)%len(convs)]
		start := time.Now()
		evs, _, err := st.Events(ctx, conv, store.Range{Before: math.MaxInt64, Limit: 50})
		lat = append(lat, time.Since(start))
		if err != nil || len(evs) != 50 {
			b.Fatalf("last 50 of %s: %d events, %v", conv, len(evs), err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
