package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

// logTimeout bounds each phase of the log scenarios.
const logTimeout = 10 * time.Minute

// logRig is an embedded broker of the run's own, in a temporary dir.
type logRig struct {
	cfg    Config
	dir    string
	broker *embedded.Broker
	kc     kafka.Config
	cl     *kgo.Client
	adm    *kadm.Client
	convs  []string // the workload's conversations
	heads  map[string]int64
	cmds   int64 // commands produced
}

func newLogRig(cfg Config) (*logRig, error) {
	dir, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, err
	}
	br, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "broker"), Logger: cfg.Log})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &logRig{cfg: cfg, dir: dir, broker: br, heads: map[string]int64{},
		kc: kafka.Config{Brokers: []string{br.Addr()}, Partitions: int32(cfg.Partitions), Logger: cfg.Log}.WithDefaults()}
	r.cl, err = kgo.NewClient(r.kc.ClientOpts(kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000))...)
	if err == nil {
		err = kafka.EnsureTopics(context.Background(), r.cl, r.kc)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	r.adm = kadm.NewClient(r.cl)
	return r, nil
}

func (r *logRig) close() {
	if r.cl != nil {
		r.cl.Close()
	}
	r.broker.Close()
	os.RemoveAll(r.dir)
}

// produceCommands produces the workload to the commands topic: cfg.Convs
// group creations (three members each), then cfg.Events−cfg.Convs sends
// spread at random over them, as connectors would.
func (r *logRig) produceCommands(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(1, 2))
	topic := r.kc.Topics().Commands
	var failed atomic.Pointer[error]
	var done atomic.Int64
	produce := func(cmd *parleyv1.Command) {
		v, err := proto.Marshal(cmd)
		if err != nil {
			failed.CompareAndSwap(nil, &err)
			return
		}
		r.cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(cmd.Conv), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
			done.Add(1)
		})
		r.cmds++
	}
	reply := func(i int) *parleyv1.ReplyTo {
		return &parleyv1.ReplyTo{Node: "bench", Partition: int32(i % r.cfg.Partitions)}
	}
	user := func(i int) string { return fmt.Sprintf("u%05d", i) }
	members := func(c int) []string { return []string{user(c), user(c + 1), user(c + 2)} }
	for c := range r.cfg.Convs {
		conv := ksuid.New().String()
		r.convs = append(r.convs, conv)
		r.heads[conv] = 1
		ms := members(c)
		produce(&parleyv1.Command{Conv: conv, MsgId: ksuid.New().String(), From: ms[0], ReplyTo: reply(c),
			Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: ms[1:], Title: "bench"}}})
	}
	body := fmt.Appendf(nil, `{"text":%q}`, strings.Repeat("x", r.cfg.BodySize))
	for i := range r.cfg.Events - r.cfg.Convs {
		c := rng.IntN(len(r.convs))
		conv := r.convs[c]
		from := members(c)[rng.IntN(3)]
		r.heads[conv]++
		produce(&parleyv1.Command{Conv: conv, MsgId: ksuid.New().String(), From: from, Cmid: fmt.Sprintf("c%d", i), ReplyTo: reply(i),
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: body}}})
		if f := failed.Load(); f != nil {
			return *f
		}
	}
	if err := r.cl.Flush(ctx); err != nil {
		return err
	}
	if f := failed.Load(); f != nil {
		return *f
	}
	return nil
}

// sendToEveryPartition produces a send to a conversation of every
// partition of the commands topic that the workload has one on, and
// returns how many it produced.
func (r *logRig) sendToEveryPartition(ctx context.Context, tag string) (int64, error) {
	seen := make(map[int32]bool)
	var n int64
	for i, conv := range r.convs {
		p := kafka.KeyPartition([]byte(conv), r.kc.Partitions)
		if seen[p] {
			continue
		}
		seen[p] = true
		cmd := &parleyv1.Command{Conv: conv, MsgId: ksuid.New().String(), From: fmt.Sprintf("u%05d", i), Cmid: tag + "-" + conv,
			ReplyTo: &parleyv1.ReplyTo{Node: "bench", Partition: p % int32(r.cfg.Partitions)},
			Body:    &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(`{"text":"restart"}`)}}}
		v, err := proto.Marshal(cmd)
		if err != nil {
			return 0, err
		}
		if err := r.cl.ProduceSync(ctx, &kgo.Record{Topic: r.kc.Topics().Commands, Key: []byte(conv), Value: v}).FirstErr(); err != nil {
			return 0, err
		}
		r.cmds++
		r.heads[conv]++
		n++
	}
	return n, nil
}

// caughtUp reports whether group's committed offsets are at most slack
// short of the end of every partition of topic (slack 1 for a topic that
// ends in a transaction marker).
func (r *logRig) caughtUp(ctx context.Context, group, topic string, slack int64) bool {
	ends, err := r.adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return false
	}
	committed, err := r.adm.FetchOffsets(ctx, group)
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

// sequence runs a sequencer on stateDir until it has committed want
// commands and every command in the topic, and returns how long that took
// from its start and its stats.
func (r *logRig) sequence(ctx context.Context, rec *recorder, stateDir string, want int64) (time.Duration, sequencer.Stats, error) {
	s, err := sequencer.New(sequencer.Config{Kafka: r.kc, NodeID: "bench", Logger: r.cfg.Log, StateDir: stateDir})
	if err != nil {
		return 0, sequencer.Stats{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, logTimeout)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Run(ctx) }()
	var last int64
	for {
		st := s.Stats()
		rec.count.Add(st.Commands - last)
		last = st.Commands
		if st.Commands >= want && r.caughtUp(ctx, "parley-sequencer", r.kc.Topics().Commands, 0) {
			took := time.Since(start)
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				return took, st, err
			}
			return took, s.Stats(), nil
		}
		select {
		case err := <-done:
			return 0, st, fmt.Errorf("the sequencer stopped after %d of %d commands: %v", st.Commands, want, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// txcopy is the ceiling of the sequencer: a consume-transform-produce loop
// with the sequencer's transaction options that copies each command's key
// and value to dst and commits, until every command is copied in
// committed transactions. It returns how long that took from its start.
func (r *logRig) txcopy(ctx context.Context, dst string, rec *recorder) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, logTimeout)
	defer cancel()
	start := time.Now()
	sess, err := kgo.NewGroupTransactSession(r.kc.ClientOpts(
		kgo.TransactionalID("bench-txcopy"),
		kgo.TransactionTimeout(15*time.Second),
		kgo.ConsumerGroup("bench-txcopy"),
		kgo.ConsumeTopics(r.kc.Topics().Commands),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(10*time.Second),
		kgo.ProducerLinger(sequencer.ProduceLinger),
		kgo.RecordRetries(10),
	)...)
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	var copied int64
	for copied < r.cmds {
		fetches := sess.PollRecords(ctx, 10000)
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("copied %d of %d: %w", copied, r.cmds, err)
		}
		n := fetches.NumRecords()
		if n == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return 0, fmt.Errorf("begin: %w", err)
		}
		var produceErr atomic.Pointer[error]
		fetches.EachRecord(func(rec *kgo.Record) {
			sess.Produce(ctx, &kgo.Record{Topic: dst, Key: rec.Key, Value: rec.Value}, func(_ *kgo.Record, err error) {
				if err != nil {
					produceErr.CompareAndSwap(nil, &err)
				}
			})
		})
		if err := sess.Client().Flush(ctx); err != nil {
			produceErr.CompareAndSwap(nil, &err)
		}
		end := kgo.TryCommit
		if produceErr.Load() != nil {
			end = kgo.TryAbort
		}
		committed, err := sess.End(ctx, end)
		if err != nil {
			return 0, fmt.Errorf("end: %w", err)
		}
		if committed {
			copied += int64(n)
			rec.count.Add(int64(n))
		}
	}
	return time.Since(start), nil
}

// runSequencer times the sequencer over the workload's commands, and a
// plain transactional copy of the same commands through the same broker
// before it; then two restarts of the sequencer, on its state directory
// and on an empty one.
func runSequencer(ctx context.Context, cfg Config, res *Result) error {
	r, err := newLogRig(cfg)
	if err != nil {
		return err
	}
	defer r.close()
	if err := r.produceCommands(ctx); err != nil {
		return fmt.Errorf("producing the commands: %w", err)
	}
	dst := r.kc.TopicPrefix + "bench.copy"
	if resp, err := r.adm.CreateTopic(ctx, int32(cfg.Partitions), -1, nil, dst); err != nil || resp.Err != nil {
		return fmt.Errorf("creating %s: %v %v", dst, err, resp.Err)
	}
	rec := newRecorder()
	prog := newProgress(Config{Scenario: "txcopy", Progress: cfg.Progress}, time.Now(), rec, nil)
	copyTook, err := r.txcopy(ctx, dst, rec)
	prog.stop()
	if err != nil {
		return fmt.Errorf("txcopy: %w", err)
	}
	rec = newRecorder()
	start := time.Now()
	prog = newProgress(cfg, start, rec, nil)
	cpu := startCPU(nil)
	stateDir := filepath.Join(r.dir, "sequencer")
	took, st, err := r.sequence(ctx, rec, stateDir, r.cmds)
	res.CPU = cpu.end()
	res.Timeline = prog.stop()
	if err != nil {
		return err
	}
	res.Seconds, res.Count, res.Unit = took.Seconds(), st.Commands, "commands/s"
	copyRate := float64(r.cmds) / copyTook.Seconds()
	res.Figures["txcopy_records_per_s"] = copyRate
	res.Figures["sequencer_share_of_txcopy"] = float64(r.cmds) / took.Seconds() / copyRate
	res.Counts["commands"], res.Counts["events"], res.Counts["rejected"] = r.cmds, st.Events, st.Rejected
	res.Counts["transactions"], res.Counts["aborted"] = st.Committed, st.Aborted
	if st.Events != r.cmds || st.Rejected != 0 || st.Undecodable != 0 {
		res.ErrorCount++
		res.Errors = append(res.Errors, fmt.Sprintf("sequencer stats %+v; want %d events", st, r.cmds))
	}
	// Restarts: a send to every partition, then the sequencer again on its
	// state directory (which it left a checkpoint in) and, for the next
	// send to every partition, on an empty one, each timed from its start
	// to the last send committed.
	for _, restart := range []struct{ name, dir string }{{"kept_store", stateDir}, {"empty_store", filepath.Join(r.dir, "sequencer-empty")}} {
		n, err := r.sendToEveryPartition(ctx, restart.name)
		if err != nil {
			return fmt.Errorf("producing the commands for a restart: %w", err)
		}
		took, st, err := r.sequence(ctx, newRecorder(), restart.dir, n)
		if err != nil {
			return fmt.Errorf("restart on the %s: %w", strings.ReplaceAll(restart.name, "_", " "), err)
		}
		res.Figures["restart_"+restart.name+"_s"] = took.Seconds()
		res.Counts["restart_"+restart.name+"_restored"] = st.RestoredRecords
		if st.Events != n || st.Rejected != 0 {
			res.ErrorCount++
			res.Errors = append(res.Errors, fmt.Sprintf("restart on the %s: sequencer stats %+v; want %d events", restart.name, st, n))
		}
	}
	return nil
}

// runRebuild sequences the workload (untimed), then times writer.Rebuild
// of the events topic into an empty Pebble store, as `parley rebuild`
// does, and checks every conversation's head in the store.
func runRebuild(ctx context.Context, cfg Config, res *Result) error {
	r, err := newLogRig(cfg)
	if err != nil {
		return err
	}
	defer r.close()
	if err := r.produceCommands(ctx); err != nil {
		return fmt.Errorf("producing the commands: %w", err)
	}
	rec := newRecorder()
	prog := newProgress(Config{Scenario: "rebuild: sequencing", Progress: cfg.Progress}, time.Now(), rec, nil)
	_, st, err := r.sequence(ctx, rec, "", r.cmds)
	prog.stop()
	if err != nil {
		return err
	}
	if st.Events != r.cmds || st.Aborted != 0 {
		return fmt.Errorf("sequencing the workload: stats %+v; want %d events", st, r.cmds)
	}
	ps, err := pebblestore.Open(filepath.Join(r.dir, "store"), pebblestore.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer ps.Close()
	start := time.Now()
	cpu := startCPU(nil)
	// Rebuild reports no progress; the store's heads are not read while it
	// runs, so the timeline has no points.
	stats, err := writer.Rebuild(ctx, r.kc, ps, 10000, cfg.Log)
	if err == nil {
		err = ps.Flush()
	}
	res.Seconds = time.Since(start).Seconds()
	res.CPU = cpu.end()
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	res.Count, res.Unit = stats.Events, "events/s"
	res.Counts["events"] = stats.Events
	res.Counts["skipped"] = stats.Undecodable + stats.Malformed + stats.OutOfSequence
	if stats.Events != r.cmds || res.Counts["skipped"] != 0 {
		res.ErrorCount++
		res.Errors = append(res.Errors, fmt.Sprintf("rebuild stats %+v; want %d events", stats, r.cmds))
	}
	for _, conv := range r.convs {
		c, err := ps.Conversation(ctx, conv)
		if err != nil || c.LastSeq != r.heads[conv] {
			res.ErrorCount++
			if len(res.Errors) < keepErrors {
				res.Errors = append(res.Errors, fmt.Sprintf("store head of %s: %d (%v), want %d", conv, c.LastSeq, err, r.heads[conv]))
			}
		}
	}
	return nil
}
