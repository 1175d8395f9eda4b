package writer

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// RebuildStats reports what Rebuild did.
type RebuildStats struct {
	Events      int64
	Undecodable int64
}

// Rebuild replays the events topic from its start up to its end when
// Rebuild began into st, in batches of batch events. st should be empty;
// replaying into a store that has data is harmless but proves nothing.
func Rebuild(ctx context.Context, kc kafka.Config, st store.Store, batch int, log *slog.Logger) (RebuildStats, error) {
	kc = kc.WithDefaults()
	if batch < 1 {
		batch = 10000
	}
	if log == nil {
		log = slog.Default()
	}
	var stats RebuildStats
	buf := make([]*parleyv1.Event, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if err := appendWithRetry(ctx, st, buf, log); err != nil {
			return err
		}
		stats.Events += int64(len(buf))
		buf = buf[:0]
		return nil
	}
	err := kafka.ReadToEnd(ctx, kc.ClientOpts(kgo.FetchMaxBytes(64<<20)), kc.Topics().Events, nil, func(r *kgo.Record) error {
		ev, err := DecodeEvent(r)
		if err != nil {
			stats.Undecodable++
			log.Warn("skipping undecodable event", "partition", r.Partition, "offset", r.Offset, "err", err)
			return nil
		}
		buf = append(buf, ev)
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
