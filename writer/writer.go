package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a Writer.
type Config struct {
	Kafka kafka.Config
	// Group is the consumer group; default "parley-writer".
	Group string
	// MaxBatch caps the events per store batch; default 10,000.
	MaxBatch int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Kafka = c.Kafka.WithDefaults()
	if c.Group == "" {
		c.Group = "parley-writer"
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 10000
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

	events, undecodable atomic.Int64
	lastErr             atomic.Pointer[error] // the current batch's last store error; nil once stored
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
	return &Writer{cfg: cfg, store: st, log: cfg.Logger.With("role", "writer")}, nil
}

// Stored returns the number of events appended to the store so far
// (replays included) and the number of undecodable records skipped.
func (w *Writer) Stored() (events, undecodable int64) { return w.events.Load(), w.undecodable.Load() }

// Run writes until ctx ends. Store errors are retried with backoff, never
// skipped: the writer does not move past a batch the store has not taken.
func (w *Writer) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(w.cfg.Kafka.ClientOpts(
		kgo.ConsumerGroup(w.cfg.Group),
		kgo.ConsumeTopics(w.cfg.Kafka.Topics().Events),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		// A rebalance waits until the batch in hand is stored and committed.
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(10*time.Second),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()

	for {
		fetches := cl.PollRecords(ctx, w.cfg.MaxBatch)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			w.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		})
		if fetches.NumRecords() > 0 {
			if err := w.writeBatch(ctx, fetches.Records()); err != nil {
				cl.AllowRebalance()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			// The batch is stored: commit it even if ctx ended meanwhile, so
			// that a clean shutdown replays nothing.
			commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := commit(commitCtx, cl, fetches.Records())
			cancel()
			if err != nil {
				// A later commit on the same partitions covers this batch;
				// until then a restart or rebalance replays it, which the
				// store absorbs.
				w.log.Warn("offset commit failed", "err", err)
			}
		}
		cl.AllowRebalance()
	}
}

// commit commits the offsets of recs, retrying briefly.
func commit(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) error {
	var err error
	for try := 0; try < 5; try++ {
		if err = cl.CommitRecords(ctx, recs...); err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(try+1) * 100 * time.Millisecond):
		}
	}
	return err
}

// writeBatch decodes recs and appends them to the store, retrying store
// errors until ctx ends.
func (w *Writer) writeBatch(ctx context.Context, recs []*kgo.Record) error {
	evs := make([]*parleyv1.Event, 0, len(recs))
	for _, r := range recs {
		ev, err := DecodeEvent(r)
		if err != nil {
			w.undecodable.Add(1)
			w.log.Warn("skipping undecodable event", "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		evs = append(evs, ev)
	}
	err := appendWithRetry(ctx, w.store, evs, w.log, func(err error) { w.lastErr.Store(&err) })
	if err == nil {
		w.events.Add(int64(len(evs)))
		w.lastErr.Store(nil)
	}
	return err
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
	backoff := 100 * time.Millisecond
	for {
		err := st.Append(ctx, evs)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, f := range failed {
			f(err)
		}
		log.Error("store append failed; retrying", "events", len(evs), "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// DecodeEvent decodes an events-topic record; see schema.DecodeEvent.
func DecodeEvent(r *kgo.Record) (*parleyv1.Event, error) { return schema.DecodeEvent(r.Key, r.Value) }
