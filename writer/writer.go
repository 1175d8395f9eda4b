package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/internal/metrics"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// Config configures a Writer.
type Config struct {
	Kafka kafka.Config
	// Group is the consumer group; default "parley-writer".
	Group string
	// MaxBatch caps the events per store batch; default 10,000.
	MaxBatch int
	// Tracked bounds the conversations whose last seq the writer keeps in
	// memory (to tell the events that continue their conversation from
	// those that do not, see SkipOutOfSequence in package schema); beyond
	// it, it forgets some and takes their next event as it comes. Default
	// 100,000.
	Tracked int
	// CommitInterval is how often the offsets of the batches stored are
	// committed (and before a rebalance, and at a clean shutdown); default
	// kafka.CommitInterval. A crash replays what was stored since.
	CommitInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes the writer's metrics (parley_writer_events_total,
	// and parley_store_*, parley_consumer_lag and
	// parley_records_skipped_total with role="writer", and its Kafka
	// client's); nil: a private registry nobody scrapes.
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	c.Kafka = c.Kafka.WithDefaults()
	if c.Group == "" {
		c.Group = "parley-writer"
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 10000
	}
	if c.Tracked == 0 {
		c.Tracked = defaultTracked
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = kafka.CommitInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Writer is the writer role.
type Writer struct {
	cfg   Config
	store store.Store
	log   *slog.Logger

	events  atomic.Int64
	skipped *metrics.Skipped
	stored  prometheus.Counter // parley_writer_events_total
	lag     *metrics.Lag
	seq     *sequence
	replays kafka.Replays
	lastErr atomic.Pointer[error] // the current batch's last store error; nil once stored
}

// New returns a Writer that appends to st; Run starts it.
func New(cfg Config, st store.Store) (*Writer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Kafka.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatch < 1 {
		return nil, errors.New("writer: MaxBatch must be positive")
	}
	if st == nil {
		return nil, errors.New("writer: no store")
	}
	if cfg.Tracked < 1 {
		return nil, errors.New("writer: Tracked must be positive")
	}
	if cfg.CommitInterval < kafka.MinCommitInterval {
		return nil, fmt.Errorf("writer: CommitInterval must be at least %v", kafka.MinCommitInterval)
	}
	skipped, err := metrics.NewSkipped(cfg.Registerer, "writer", cfg.Kafka.Topics().Events)
	if err != nil {
		return nil, fmt.Errorf("writer: metrics: %w", err)
	}
	stored, err := metrics.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_writer_events_total",
		Help: "Events appended to the timeline store (replays included).",
	}))
	if err != nil {
		return nil, fmt.Errorf("writer: metrics: %w", err)
	}
	lag, err := metrics.NewLag(cfg.Registerer, "writer", cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("writer: metrics: %w", err)
	}
	if st, err = metrics.InstrumentStore(cfg.Registerer, "writer", st); err != nil {
		return nil, fmt.Errorf("writer: metrics: %w", err)
	}
	return &Writer{cfg: cfg, store: st, log: cfg.Logger.With("role", "writer"), skipped: skipped, stored: stored, lag: lag, seq: newSequence(cfg.Tracked)}, nil
}

// Stored returns the number of events appended to the store so far
// (replays included) and the number of records skipped (undecodable,
// malformed, out of sequence or read again; parley_records_skipped_total).
func (w *Writer) Stored() (events, skipped int64) {
	t := w.cfg.Kafka.Topics().Events
	for _, r := range schema.SkipReasons {
		skipped += w.skipped.Count(t, r)
	}
	return w.events.Load(), skipped
}

// Skipped returns the number of records skipped for reason (one of
// schema.SkipReasons).
func (w *Writer) Skipped(reason string) int64 {
	return w.skipped.Count(w.cfg.Kafka.Topics().Events, reason)
}

// Run writes until ctx ends. A record that is undecodable, malformed or
// out of sequence (schema.SkipReasons) is skipped, logged and counted:
// it is the same bytes on every read, so retrying it would stop the
// partition for good. So is one that the Kafka client hands back after
// going back in the log (kafka.Replays): it is stored already. Every
// other event is one the store can hold, so a
// store error is an outage: it is retried with backoff, never skipped, and
// the writer does not move past a batch the store has not taken.
func (w *Writer) Run(ctx context.Context) error {
	opts := append(metrics.KafkaClient(w.cfg.Registerer, "writer", "events"),
		kgo.ConsumerGroup(w.cfg.Group),
		kgo.ConsumeTopics(w.cfg.Kafka.Topics().Events),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A rebalance waits until the batch in hand is stored.
		kgo.BlockRebalanceOnPoll(),
		// Another writer may store more of a partition while this one does
		// not own it: what it knew of those conversations is stale then.
		kgo.OnPartitionsLost(w.forget),
		kgo.SessionTimeout(10*time.Second),
	)
	opts = append(opts, kafka.MarkedCommits(w.cfg.CommitInterval, w.forget, func(err error) {
		w.log.Warn("offset commit before a rebalance failed", "err", err)
	})...)
	cl, err := kgo.NewClient(w.cfg.Kafka.ClientOpts(opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	w.lag.Watch(cl)
	defer w.lag.Watch(nil)

	for {
		fetches := cl.PollRecords(ctx, w.cfg.MaxBatch)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			w.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		})
		w.replays.Skip(fetches, w.skipped.Replays(w.log))
		if fetches.NumRecords() > 0 {
			if err := w.writeBatch(ctx, fetches.Records()); err != nil {
				cl.AllowRebalance()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			// The batch is stored: its offsets are committed within
			// CommitInterval, and before its partitions are revoked, as
			// they are when Close leaves the group at a clean shutdown
			// (kafka.MarkedCommits). Until then a crash replays it, which
			// the store absorbs.
			cl.MarkCommitRecords(fetches.Records()...)
		}
		cl.AllowRebalance()
	}
}

func (w *Writer) forget(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	w.replays.Forget(lost)
	for _, ps := range lost {
		w.seq.forget(ps)
	}
}

// writeBatch decodes recs, skips the records the store must not take, and
// appends the rest to the store, retrying store errors until ctx ends.
func (w *Writer) writeBatch(ctx context.Context, recs []*kgo.Record) error {
	evs := takeEvents(recs, w.seq, w.log, func(reason string) { w.skipped.Add(w.cfg.Kafka.Topics().Events, reason) })
	err := appendWithRetry(ctx, w.store, evs, w.log, func(err error) { w.lastErr.Store(&err) })
	if err == nil {
		w.seq.trim()
		w.events.Add(int64(len(evs)))
		w.stored.Add(float64(len(evs)))
		w.lastErr.Store(nil)
	}
	return err
}

// takeEvents decodes recs (records of the events topic, in log order) and
// returns the events the store may take: well-formed (schema.DecodeEvent)
// and continuing their conversations (see sequence). Each record left out
// is logged with its reason and counted through skip.
func takeEvents(recs []*kgo.Record, seq *sequence, log *slog.Logger, skip func(reason string)) []*parleyv1.Event {
	batch := make([]tracked, 0, len(recs))
	from := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		// Shared with the record: the store copies what it keeps, and
		// sequence copies the conversation ids it tracks.
		ev, err := schema.DecodeSharedEvent(r.Key, r.Value)
		if err != nil {
			reason := schema.SkipReason(err)
			skip(reason)
			log.Warn("skipping an event record", "partition", r.Partition, "offset", r.Offset, "reason", reason, "err", err)
			continue
		}
		batch = append(batch, tracked{partition: r.Partition, ev: ev})
		from = append(from, r)
	}
	ok, why := seq.check(batch)
	evs := make([]*parleyv1.Event, 0, len(batch))
	for i, t := range batch {
		if !ok[i] {
			skip(schema.SkipOutOfSequence)
			log.Warn("skipping an event record", "partition", from[i].Partition, "offset", from[i].Offset, "reason", schema.SkipOutOfSequence,
				"err", why[i]+" (the sequencer writes no such event)")
			continue
		}
		evs = append(evs, t.ev)
	}
	return evs
}

// Check reports whether the writer is making progress: it fails while the
// store refuses the batch in hand (the store may answer pings all the same,
// for instance when it rejects the batch itself).
func (w *Writer) Check(context.Context) error {
	if e := w.lastErr.Load(); e != nil {
		return fmt.Errorf("the store refuses the current batch: %w", *e)
	}
	return nil
}

// appendWithRetry appends evs to st, retrying with backoff (100 ms doubling
// to 10 s) until st takes them or ctx ends. failed, if given, hears of each
// failure.
func appendWithRetry(ctx context.Context, st store.Store, evs []*parleyv1.Event, log *slog.Logger, failed ...func(error)) error {
	if len(evs) == 0 {
		return nil
	}
	return retry(ctx, log.With("events", len(evs)), "store append failed; retrying", func() error { return st.Append(ctx, evs) }, failed...)
}

// retry runs op until it succeeds or ctx ends, with backoff (100 ms
// doubling to 10 s), logging each failure with msg.
func retry(ctx context.Context, log *slog.Logger, msg string, op func() error, failed ...func(error)) error {
	backoff := 100 * time.Millisecond
	for {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, f := range failed {
			f(err)
		}
		log.Error(msg, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
