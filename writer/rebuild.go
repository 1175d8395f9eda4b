package writer

import (
	"context"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	"github.com/parley-im/parley/store"
)

// RebuildStats reports what Rebuild did.
type RebuildStats struct {
	Events int64
	// Records skipped, as the writer skips them (schema.SkipReasons).
	Undecodable, Malformed, OutOfSequence int64
}

// RebuildConfig configures RebuildWith.
type RebuildConfig struct {
	Kafka kafka.Config
	// Batch is the number of events per store append; default 10000.
	Batch int
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Progress, if not nil, is told how far the replay has come: once
	// when the size of the topic is known, then at most once per
	// ProgressInterval while records come, and once more with Done set
	// when the replay has succeeded. It is called on the replaying
	// goroutine, so a slow Progress slows the rebuild. nil: no reports.
	Progress func(RebuildProgress)
	// ProgressInterval is the least time between two reports; default 1s.
	ProgressInterval time.Duration
}

// RebuildProgress is how far a rebuild has come.
type RebuildProgress struct {
	// Read counts the offsets of the events topic read so far: events,
	// skipped records, and the transaction markers and aborted records
	// between them.
	Read int64
	// Total is the number of offsets the topic held when the rebuild
	// began, from each partition's start to its end: what Read reaches
	// when done. It grows with Read if events come meanwhile (the replay
	// takes those committed by the time it has looked at every
	// partition), and is 0 if the offsets could not be listed.
	Total int64
	// Stats: the events stored so far (after each batch the store took)
	// and the records skipped.
	Stats RebuildStats
	// Elapsed is the time since the rebuild began.
	Elapsed time.Duration
	// Done is set on the last report, after the last batch is stored.
	Done bool
}

// Rebuild replays the events topic from its start up to its end when
// Rebuild began into st, in batches of batch events. st should be empty;
// replaying into a store that has data is harmless but proves nothing.
// Records are skipped exactly as the writer skips them, so a rebuilt store
// equals the one the writer built.
func Rebuild(ctx context.Context, kc kafka.Config, st store.Store, batch int, log *slog.Logger) (RebuildStats, error) {
	return RebuildWith(ctx, RebuildConfig{Kafka: kc, Batch: batch, Logger: log}, st)
}

// RebuildWith is Rebuild with every option, progress reports among them.
func RebuildWith(ctx context.Context, cfg RebuildConfig, st store.Store) (RebuildStats, error) {
	began := time.Now()
	kc := cfg.Kafka.WithDefaults()
	batch := cfg.Batch
	if batch < 1 {
		batch = 10000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var stats RebuildStats
	skip := func(reason string) {
		switch reason {
		case schema.SkipUndecodable:
			stats.Undecodable++
		case schema.SkipMalformed:
			stats.Malformed++
		case schema.SkipOutOfSequence:
			stats.OutOfSequence++
		}
	}
	topic := kc.Topics().Events
	prog := newProgress(ctx, cfg, kc, topic, began, log)
	seq := newSequence(defaultTracked)
	buf := make([]*kgo.Record, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		evs := takeEvents(buf, seq, log, skip)
		if err := appendWithRetry(ctx, st, evs, log); err != nil {
			return err
		}
		seq.trim()
		stats.Events += int64(len(evs))
		buf = buf[:0]
		return nil
	}
	err := kafka.ReadToEnd(ctx, kc.ClientOpts(kgo.FetchMaxBytes(64<<20)), topic, nil, func(r *kgo.Record) error {
		buf = append(buf, r)
		prog.read(r, stats)
		if len(buf) == batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		prog.done(stats)
	}
	return stats, err
}

// progress keeps the count of offsets read for RebuildConfig.Progress. A
// nil *progress reports nothing.
type progress struct {
	report   func(RebuildProgress)
	interval time.Duration
	began    time.Time
	last     time.Time       // of the last report
	next     map[int32]int64 // partition -> the next offset not yet counted
	p        RebuildProgress
	n        int
}

// newProgress lists the offsets of topic and makes the first report, or
// returns nil if cfg asks for no reports.
func newProgress(ctx context.Context, cfg RebuildConfig, kc kafka.Config, topic string, began time.Time, log *slog.Logger) *progress {
	if cfg.Progress == nil {
		return nil
	}
	pr := &progress{report: cfg.Progress, interval: cfg.ProgressInterval, began: began, next: make(map[int32]int64)}
	if pr.interval <= 0 {
		pr.interval = time.Second
	}
	if cl, err := kgo.NewClient(kc.ClientOpts()...); err != nil {
		log.Warn("rebuild: cannot tell the size of the events topic", "err", err)
	} else {
		adm := kadm.NewClient(cl)
		starts, err := adm.ListStartOffsets(ctx, topic)
		if err == nil {
			err = starts.Error()
		}
		var ends kadm.ListedOffsets
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, topic)
		}
		if err == nil {
			err = ends.Error()
		}
		cl.Close()
		if err != nil {
			// The replay lists them too, and says what is wrong.
			log.Warn("rebuild: cannot tell the size of the events topic", "err", err)
		} else {
			starts.Each(func(s kadm.ListedOffset) {
				pr.next[s.Partition] = s.Offset
				if e, ok := ends.Lookup(topic, s.Partition); ok && e.Offset > s.Offset {
					pr.p.Total += e.Offset - s.Offset
				}
			})
		}
	}
	pr.send(time.Now())
	return pr
}

// read counts r and what lay between it and the record before it on its
// partition, and reports if the interval has passed.
func (pr *progress) read(r *kgo.Record, stats RebuildStats) {
	if pr == nil {
		return
	}
	from, ok := pr.next[r.Partition]
	if !ok || from > r.Offset {
		from = r.Offset
	}
	pr.p.Read += r.Offset + 1 - from
	pr.next[r.Partition] = r.Offset + 1
	pr.p.Total = max(pr.p.Total, pr.p.Read)
	if pr.n++; pr.n%256 != 0 {
		return
	}
	if now := time.Now(); now.Sub(pr.last) >= pr.interval {
		pr.p.Stats = stats
		pr.send(now)
	}
}

// done makes the last report: every offset up to the ends listed first
// has been passed.
func (pr *progress) done(stats RebuildStats) {
	if pr == nil {
		return
	}
	pr.p.Read = max(pr.p.Read, pr.p.Total)
	pr.p.Total = pr.p.Read
	pr.p.Stats, pr.p.Done = stats, true
	pr.send(time.Now())
}

func (pr *progress) send(now time.Time) {
	pr.last = now
	pr.p.Elapsed = now.Sub(pr.began)
	pr.report(pr.p)
}
