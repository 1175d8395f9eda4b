package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

// The sizes of issue 2's runs: 100,000 sends across 1,000 conversations
// and 200 senders, 5% retried.
const (
	nConvs    = 1000
	nSenders  = 200
	nSends    = 100_000
	retryFrac = 0.05
)

// runInProcess runs fn as a role until the returned stop is called.
func runInProcess(t *testing.T, name string, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := run(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func newSequencer(t *testing.T, c *cluster, node string) *sequencer.Sequencer {
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: node, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openStore(t testing.TB, dir string) *pebblestore.Store {
	st, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPipeline is run 1: sequencer and writer in-process; every invariant
// over the log, the outcomes and the store.
func TestPipeline(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(nConvs, nSenders, nSends, retryFrac, 1)
	outs := c.collectOutcomes(context.Background())
	st := openStore(t, t.TempDir())
	defer st.Close()
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-1").Run)
	wr, err := writer.New(writer.Config{Kafka: c.kc, Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	stopWriter := runInProcess(t, "writer", wr.Run)

	start := time.Now()
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, 3*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	t.Logf("%d commands sequenced in %v", w.commands(), time.Since(start))
	waitFor(t, time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })
	stopWriter()
	w.check(t, c.events(), outs, st)
}

// TestSequencerLinger: the first transaction waits for nothing; commands
// that arrive within the linger, one by one, gather into one transaction
// until MaxBatch; a sequencer lingering when it is stopped stops at once
// and commits nothing half-gathered.
func TestSequencerLinger(t *testing.T) {
	c := newCluster(t)
	reg := prometheus.NewRegistry()
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: "seq-linger", Linger: time.Hour, MaxBatch: 5, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// Not runInProcess: a stop that hangs must fail the test, not hang
	// its cleanup (which waits a while, so that the sequencer does not log
	// to a finished test).
	ctx, stop := context.WithCancel(context.Background())
	var runErr error
	ran := make(chan struct{})
	go func() { runErr = s.Run(ctx); close(ran) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-ran:
		case <-time.After(30 * time.Second):
		}
	})
	conv := ksuid.New().String()
	c.produce(&parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: "create",
		Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}}})
	waitFor(t, time.Minute, "the create, not held by the linger", func() bool { return s.Stats().Committed == 1 })

	// Each send its own produce request, so that the sequencer polls them
	// one or a few at a time.
	cl := c.client()
	defer cl.Close()
	send := func(i int) {
		v, err := proto.Marshal(&parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: fmt.Sprintf("m%d", i),
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(`{"text":"hi"}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: c.kc.Topics().Commands, Key: []byte(conv), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		send(i)
	}
	// Stats count a command when it is decided, before its transaction ends.
	waitFor(t, time.Minute, "five sends, at MaxBatch before the linger ends", func() bool { return s.Stats().Committed >= 2 })
	if st := s.Stats(); st.Committed != 2 || st.Events != 6 || st.Aborted != 0 {
		t.Fatalf("after the five sends: %+v; want them in one transaction", st)
	}

	// The sixth waits for the linger, an hour: once it is fetched, the
	// sequencer is gathering, and a stop must end that at once.
	send(5)
	waitFor(t, time.Minute, "the sixth send fetched", func() bool { return commandsFetched(t, reg) >= 7 })
	stop()
	select {
	case <-ran:
		if runErr != nil {
			t.Fatal(runErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sequencer did not stop while lingering")
	}
	if st := s.Stats(); st.Events != 6 || st.Committed != 2 || st.Aborted != 0 {
		t.Fatalf("after a stop while lingering: %+v", st)
	}
}

// commandsFetched is the number of commands records the sequencer's Kafka
// client has fetched, from its metrics.
func commandsFetched(t *testing.T, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "parley_kafka_fetch_records_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "topic" && l.GetValue() == "parley.commands" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestSequencerKilled is run 2: the sequencer is a child process, killed
// with SIGKILL mid-stream and restarted.
func TestSequencerKilled(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(nConvs, nSenders, nSends, retryFrac, 2)
	outs := c.collectOutcomes(context.Background())
	// Both runs on one state directory: the second finds the state of a
	// crashed run, which it must not trust.
	args := []string{"sequencer", "--brokers", c.broker.Addr(), "--node-id", "seq-k", "--log-level", "warn", "--state-dir", t.TempDir()}
	seq := startChild(t, "sequencer-1", args...)
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, 2*time.Minute, "a third of the outcomes", func() bool { return outs.count() >= w.commands()/3 })
	seq.kill()
	t.Logf("sequencer killed after %d outcomes", outs.count())
	startChild(t, "sequencer-2", args...)
	waitFor(t, 3*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })

	// The writer runs after, from the log: the store must equal it.
	st := openStore(t, t.TempDir())
	defer st.Close()
	wr, err := writer.New(writer.Config{Kafka: c.kc, Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	stop := runInProcess(t, "writer", wr.Run)
	waitFor(t, time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })
	stop()
	w.check(t, c.events(), outs, st)
}

// TestSkipsReplays: the sequencer's, the writer's and fanout's Kafka
// clients that go back in the log do not get a record handled twice. The
// broker's partitions get new leader epochs before anything is written at
// them; asked where the epoch a client consumed at ends, the embedded
// broker then answers that it does not know it, and the client goes back
// to the start of each partition it consumed. With a dedup window of a
// few entries, the commands read again would otherwise be sequenced again;
// the writer and fanout would take the events read again for out of
// sequence (and fanout would push again those of conversations it has not
// cached).
func TestSkipsReplays(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(10, 10, 1_000, 0, 11)
	outs := c.collectOutcomes(context.Background())
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: "seq-replays", Logger: testLogger(t),
		WindowMinAge: time.Millisecond, WindowMinEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "sequencer", s.Run)
	st := openStore(t, t.TempDir())
	defer st.Close()
	wr, err := writer.New(writer.Config{Kafka: c.kc, Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	stopWriter := runInProcess(t, "writer", wr.Run)
	fo, err := fanout.New(fanout.Config{Kafka: c.kc, PushSecret: []byte(rtPushSecret), Logger: testLogger(t)}, st)
	if err != nil {
		t.Fatal(err)
	}
	stopFanout := runInProcess(t, "fanout", fo.Run)
	// The sends before the new epochs come in two parts, each answered
	// before the next: the second moves each conversation's window past
	// the first.
	c.produce(w.creates...)
	sent := 0
	for _, part := range []int{len(w.sends) * 2 / 5, len(w.sends) * 3 / 5} {
		c.produce(w.sends[sent:part]...)
		sent = part
		waitFor(t, time.Minute, fmt.Sprintf("%d outcomes", len(w.creates)+sent), func() bool { return outs.answered() >= len(w.creates)+sent })
	}
	events := c.kc.Topics().Events
	waitFor(t, time.Minute, "fanout to route every event so far", func() bool { return c.groupCaughtUp("parley-fanout", events) })

	// The clients ask about their epochs once they see the new ones (one
	// request each: the sequencer about the commands, the writer and fanout
	// about the events); nothing is written until the broker has answered
	// them all, or a batch of the new epoch would make its answer right.
	kf := c.broker.Cluster()
	var askedCommands, askedEvents atomic.Int64
	kf.ControlKey(int16(kmsg.OffsetForLeaderEpoch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kf.KeepControl()
		for _, rt := range req.(*kmsg.OffsetForLeaderEpochRequest).Topics {
			switch rt.Topic {
			case c.kc.Topics().Commands:
				askedCommands.Add(1)
			case events:
				askedEvents.Add(1)
			}
		}
		return nil, nil, false
	})
	kf.ShufflePartitionLeaders()
	waitFor(t, time.Minute, "the clients to ask about their epochs", func() bool { return askedCommands.Load() >= 1 && askedEvents.Load() >= 2 })
	c.produce(w.sends[sent:]...)
	waitFor(t, time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	waitFor(t, time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", events) })
	waitFor(t, time.Minute, "fanout to catch up", func() bool { return c.groupCaughtUp("parley-fanout", events) })
	stopWriter()
	stopFanout()
	w.check(t, c.events(), outs, st)
	if n, m := wr.Skipped(schema.SkipOutOfSequence), fo.Skipped(events, schema.SkipOutOfSequence); n != 0 || m != 0 {
		t.Fatalf("events read again taken for out of sequence: %d by the writer, %d by fanout", n, m)
	}
	commands, stored, routed := s.Stats().Replayed, wr.Skipped(schema.SkipReplayed), fo.Skipped(events, schema.SkipReplayed)
	t.Logf("skipped as handled already: %d commands, %d events by the writer, %d by fanout", commands, stored, routed)
	if commands == 0 || stored == 0 || routed == 0 {
		t.Fatal("a client did not go back: the test tested nothing")
	}
}

// TestSequencerLeaves is run 3: two sequencers in one group, one leaving
// mid-stream.
func TestSequencerLeaves(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(nConvs, nSenders, nSends, retryFrac, 3)
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer a", newSequencer(t, c, "seq-a").Run)
	stopB := runInProcess(t, "sequencer b", newSequencer(t, c, "seq-b").Run)
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, 2*time.Minute, "a third of the outcomes", func() bool { return outs.count() >= w.commands()/3 })
	stopB()
	t.Logf("sequencer b left after %d outcomes", outs.count())
	defer func() {
		if t.Failed() {
			t.Log(c.dumpOffsets())
			t.Log(c.rereadOutcomes(outs), " want ", w.commands())
			t.Log(c.missingByPartition(w, outs))
		}
	}()
	waitFor(t, 1*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	w.check(t, c.events(), outs, nil)
}

// TestSequencerStateOnDisk: sequencers whose state cache holds a few
// conversations, so that nearly every command loads its conversation's
// state from the local state store; one of them leaves mid-stream and the
// other restores its partitions into its store. Every invariant holds,
// retries of older sends included.
func TestSequencerStateOnDisk(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(300, 100, 30_000, retryFrac, 9)
	outs := c.collectOutcomes(context.Background())
	start := func(node string) (*sequencer.Sequencer, func()) {
		s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: node, Logger: testLogger(t),
			StateDir: t.TempDir(), StateCacheBytes: 64 << 10, MaxBatch: 200})
		if err != nil {
			t.Fatal(err)
		}
		return s, runInProcess(t, node, s.Run)
	}
	a, _ := start("seq-disk-a")
	b, stopB := start("seq-disk-b")
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, 2*time.Minute, "a third of the outcomes", func() bool { return outs.count() >= w.commands()/3 })
	stopB()
	waitFor(t, 2*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	w.check(t, c.events(), outs, nil)
	sa, sb := a.Stats(), b.Stats()
	t.Logf("sequencer a: %+v; b: %+v", sa, sb)
	// The cache holds about 64 KiB over the partitions, a conversation's
	// state grows to about 25 KiB (a hundred window entries), and a
	// transaction has at most 200 commands: once conversations have grown,
	// most commands find theirs gone from memory since the last
	// transaction that touched it (about a fifth over the whole run).
	if loads, cmds := sa.StateLoads+sb.StateLoads, sa.Commands+sb.Commands; loads < cmds/10 {
		t.Fatalf("%d state loads for %d commands: the cache did not bound the state", loads, cmds)
	}
}

// TestSequencerRestartKeepsStore: a sequencer stops cleanly mid-stream,
// another takes its partitions for a while and stops, and the first starts
// again on its state directory: it restores its partitions from the store
// its last run checkpointed and the changelog records the other wrote
// since, not from the whole changelog. Every invariant holds, retries of
// sends from before each stop included.
func TestSequencerRestartKeepsStore(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(300, 100, 30_000, retryFrac, 11)
	outs := c.collectOutcomes(context.Background())
	dirA := t.TempDir()
	start := func(node, dir string) (*sequencer.Sequencer, func()) {
		s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: node, Logger: testLogger(t), StateDir: dir, MaxBatch: 200})
		if err != nil {
			t.Fatal(err)
		}
		return s, runInProcess(t, node, s.Run)
	}
	third := len(w.sends) / 3
	phase := func(node, dir string, sends []*parleyv1.Command, answered int) sequencer.Stats {
		s, stop := start(node, dir)
		c.produce(sends...)
		waitFor(t, 2*time.Minute, fmt.Sprintf("%d outcomes", answered), func() bool { return outs.answered() >= answered })
		stop()
		return s.Stats()
	}
	c.produce(w.creates...)
	phase("seq-a", dirA, w.sends[:third], len(w.creates)+third)
	logged := c.endOffsets(c.kc.Topics().SequencerState)
	phase("seq-b", t.TempDir(), w.sends[third:2*third], len(w.creates)+2*third)
	written := c.endOffsets(c.kc.Topics().SequencerState) - logged
	again := phase("seq-a", dirA, w.sends[2*third:], w.commands())
	w.check(t, c.events(), outs, nil)

	t.Logf("the changelog had %d records at the first stop, the other sequencer wrote %d; the restarted one restored %d",
		logged, written, again.RestoredRecords)
	switch {
	case written == 0 || logged < written:
		t.Fatalf("the test needs a changelog of some length at the first stop (%d records) and a tail written by the other sequencer (%d)", logged, written)
	case again.RestoredRecords == 0 || again.RestoredRecords > written:
		t.Fatalf("the restarted sequencer restored %d changelog records; the store lacked the %d written while it was stopped", again.RestoredRecords, written)
	}
}

// TestRestoreDistrustsAnOldTail: after a restart, the changelog records
// the kept state store lacks turn out to be older than a restore may read
// alone (their own timestamps say so, whatever the checkpoint said): the
// partition is restored from the whole changelog instead, and sequencing
// goes on where it was.
func TestRestoreDistrustsAnOldTail(t *testing.T) {
	c := newCluster(t)
	outs := c.collectOutcomes(context.Background())
	dir := t.TempDir()
	start := func() (*sequencer.Sequencer, func()) {
		s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: "seq-old-tail", Logger: testLogger(t), StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s, runInProcess(t, "sequencer", s.Run)
	}
	conv := newMsgID()
	reply := &parleyv1.ReplyTo{Node: replyNode}
	send := func(cmid string) *parleyv1.Command {
		return &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: cmid, ReplyTo: reply,
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(`"x"`)}}}
	}
	sequenced := func(cmd *parleyv1.Command) int64 {
		t.Helper()
		c.produce(cmd)
		waitFor(t, 30*time.Second, "the outcome", func() bool { return len(outs.get(cmd.MsgId)) > 0 })
		o := outs.get(cmd.MsgId)[0]
		if o.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
			t.Fatalf("outcome %v %v %q", o.Status, o.Reason, o.Message)
		}
		return o.GetEvent().GetSeq()
	}
	_, stop := start()
	c.produce(&parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: "create", ReplyTo: reply,
		Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}}})
	for i := range 5 {
		sequenced(send(fmt.Sprintf("a%d", i)))
	}
	stop() // a checkpoint of the conversation's partition

	// Records of other conversations, written two hours ago as their
	// timestamps go, after the checkpoint's offset.
	p := kafka.KeyPartition([]byte(conv), c.kc.Partitions)
	cl := c.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	for i := range 3 {
		r := &kgo.Record{Topic: c.kc.Topics().SequencerState, Partition: p, Key: fmt.Appendf(nil, "%s/h", newMsgID()), Value: []byte("x"),
			Timestamp: time.Now().Add(-2 * time.Hour).Add(time.Duration(i) * time.Millisecond)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var whole int64
	err := kafka.ReadToEnd(context.Background(), c.kc.ClientOpts(), c.kc.Topics().SequencerState, []int32{p}, func(*kgo.Record) error { whole++; return nil })
	if err != nil {
		t.Fatal(err)
	}

	s, _ := start()
	if seq := sequenced(send("b")); seq != 7 { // the create, five sends, then this
		t.Fatalf("the send after the restart got seq %d, want 7", seq)
	}
	if got := s.Stats().RestoredRecords; got != whole {
		t.Fatalf("restored %d changelog records after the restart; the partition's whole changelog is %d", got, whole)
	}
}

// TestAbortRestoresWhatTheStoreLacks: the broker fails one of the
// sequencer's produce requests mid-stream, so its transaction aborts and
// the state in memory goes. The state store still holds committed state
// (all of it written there by syncs: the cache is large enough to keep
// every conversation), so each partition is restored from it and the
// changelog records it lacks (at most StateSyncRecords and a
// transaction's), not from the whole changelog. Every invariant holds,
// retries of older sends included.
func TestAbortRestoresWhatTheStoreLacks(t *testing.T) {
	c := newCluster(t)
	r := abortMidStream(t, c)
	switch {
	case r.logged < 2*r.bound:
		t.Fatalf("the changelog had only %d records at the fault; the test needs more than %d", r.logged, 2*r.bound)
	case r.restored > r.bound:
		t.Fatalf("restored %d changelog records after the abort, more than the store can lack (%d)", r.restored, r.bound)
	}
}

// TestAbortRestoresAllWhenTombstonesMayBeGone: as above, but the changelog
// keeps a tombstone no time at all once compacted (delete.retention.ms 0),
// so the records the store lacks may have lost deletions: the restore after
// the abort reads the whole changelog.
func TestAbortRestoresAllWhenTombstonesMayBeGone(t *testing.T) {
	c := newCluster(t)
	cl := c.client()
	defer cl.Close()
	resps, err := kadm.NewClient(cl).AlterTopicConfigs(context.Background(), []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: kadm.StringPtr("0")},
	}, c.kc.Topics().SequencerState)
	if err == nil {
		_, err = resps.On(c.kc.Topics().SequencerState, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := abortMidStream(t, c)
	// Transaction markers count in logged, not in restored: data records
	// are far more than half of it.
	if r.restored <= r.bound || r.restored < r.logged/2 {
		t.Fatalf("restored %d changelog records after the abort, of %d at the fault: not the whole changelog", r.restored, r.logged)
	}
}

// abortResult is what abortMidStream saw: the changelog's records (end
// offsets, transaction markers included) when the fault was armed, the
// changelog records read by restores after it, and the most a restore of
// only what the state store lacks can read.
type abortResult struct{ logged, restored, bound int64 }

// abortMidStream runs a sequencer over a workload, fails one of its produce
// requests to the events topic after two thirds of the commands, and checks
// every invariant once all commands are answered.
func abortMidStream(t *testing.T, c *cluster) abortResult {
	t.Helper()
	w := newWorkload(300, 100, 45_000, retryFrac, 10)
	outs := c.collectOutcomes(context.Background())
	// A partition's store lacks a few tens of records more after each
	// transaction, up to syncRecords: after the abort, nearly every
	// partition has some to restore.
	const syncRecords, maxBatch = 400, 200
	s, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: "seq-abort", Logger: testLogger(t),
		StateDir: t.TempDir(), MaxBatch: maxBatch, StateSyncRecords: syncRecords})
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "sequencer", s.Run)
	// Two thirds of the sends are answered before the fault is armed, and
	// the rest come after it: every partition has commands after the
	// abort, so every partition is restored.
	first := len(w.sends) * 2 / 3
	c.produce(w.creates...)
	c.produce(w.sends[:first]...)
	waitFor(t, 2*time.Minute, "two thirds of the outcomes", func() bool { return outs.answered() >= len(w.creates)+first })

	logged := c.endOffsets(c.kc.Topics().SequencerState)
	before := s.Stats()
	fault := c.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: c.kc.Topics().Events, Err: kerr.InvalidRecord})
	c.produce(w.sends[first:]...)
	waitFor(t, time.Minute, "the fault to be hit", func() bool { return fault.Hits() > 0 })
	waitFor(t, 2*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	w.check(t, c.events(), outs, nil)

	after := s.Stats()
	restored := after.RestoredRecords - before.RestoredRecords
	t.Logf("aborted %d; %d changelog records restored after the fault, the changelog had %d", after.Aborted-before.Aborted, restored, logged)
	switch {
	case after.Aborted == before.Aborted:
		t.Fatal("no transaction aborted")
	case restored == 0:
		t.Fatal("nothing was restored after the abort")
	}
	// Each partition's store lacks fewer than syncRecords after a commit
	// that did not sync it, plus that transaction's records: a head and a
	// chunk a command at most, over all partitions.
	return abortResult{logged: logged, restored: restored, bound: int64(testPartitions*syncRecords + 2*maxBatch)}
}

// endOffsets is the sum of topic's partitions' end offsets.
func (c *cluster) endOffsets(topic string) int64 {
	c.t.Helper()
	cl := c.client()
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		c.t.Fatal(err)
	}
	var n int64
	ends.Each(func(e kadm.ListedOffset) { n += e.Offset })
	return n
}

// TestWriterKilledAndRebuild is runs 4 and 5: the writer is a child
// process killed with SIGKILL mid-stream and restarted, and the store ends
// equal to the log; then parley rebuild into an empty store gives the same
// timelines.
func TestWriterKilledAndRebuild(t *testing.T) {
	c := newCluster(t)
	w := newWorkload(nConvs, nSenders, nSends, retryFrac, 4)
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-w").Run)
	storeDir := filepath.Join(t.TempDir(), "store")
	args := []string{"writer", "--brokers", c.broker.Addr(), "--store-dir", storeDir, "--log-level", "warn"}
	wr := startChild(t, "writer-1", args...)
	c.produce(w.creates...)
	c.produce(w.sends...)
	waitFor(t, 2*time.Minute, "a third of the outcomes", func() bool { return outs.count() >= w.commands()/3 })
	wr.kill()
	t.Logf("writer killed after %d outcomes", outs.count())
	wr = startChild(t, "writer-2", args...)
	waitFor(t, 3*time.Minute, "every outcome", func() bool { return outs.answered() >= w.commands() })
	waitFor(t, time.Minute, "the writer to catch up", func() bool { return c.groupCaughtUp("parley-writer", c.kc.Topics().Events) })
	wr.stop()
	events := c.events()
	st := openStore(t, storeDir)
	w.check(t, events, outs, st)
	st.Close()

	rebuilt := filepath.Join(t.TempDir(), "rebuilt")
	rb := startChild(t, "rebuild", "rebuild", "--brokers", c.broker.Addr(), "--store-dir", rebuilt, "--log-level", "warn")
	if err := rb.cmd.Wait(); err != nil {
		t.Fatalf("parley rebuild: %v", err)
	}
	st = openStore(t, rebuilt)
	defer st.Close()
	w.check(t, events, nil, st)
}
