package writer

import (
	"context"
	"log/slog"

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

// Rebuild replays the events topic from its start up to its end when
// Rebuild began into st, in batches of batch events. st should be empty;
// replaying into a store that has data is harmless but proves nothing.
// Records are skipped exactly as the writer skips them, so a rebuilt store
// equals the one the writer built.
func Rebuild(ctx context.Context, kc kafka.Config, st store.Store, batch int, log *slog.Logger) (RebuildStats, error) {
	kc = kc.WithDefaults()
	if batch < 1 {
		batch = 10000
	}
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
	err := kafka.ReadToEnd(ctx, kc.ClientOpts(kgo.FetchMaxBytes(64<<20)), kc.Topics().Events, nil, func(r *kgo.Record) error {
		buf = append(buf, r)
		if len(buf) == batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return stats, err
}
