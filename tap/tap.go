// Package tap prints the events topic as JSON lines, one event per line in
// the client protocol's event form, for people and for analytics scripts.
package tap

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
)

// Config configures Run.
type Config struct {
	Kafka kafka.Config
	// Follow keeps reading new events after the end; otherwise Run returns
	// once it has printed everything committed when it started.
	Follow bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Run writes every committed event, from the start of the topic, to w.
// Records that are undecodable or malformed (schema.DecodeEvent) are
// reported on the logger, with the reason, and skipped.
func Run(ctx context.Context, cfg Config, w io.Writer) error {
	cfg.Kafka = cfg.Kafka.WithDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	enc := json.NewEncoder(w)
	print := func(r *kgo.Record) error {
		ev, err := schema.DecodeEvent(r.Key, r.Value)
		if err != nil {
			cfg.Logger.Warn("skipping an event record", "partition", r.Partition, "offset", r.Offset, "reason", schema.SkipReason(err), "err", err)
			return nil
		}
		return enc.Encode(schema.ToJSON(ev))
	}
	topic := cfg.Kafka.Topics().Events
	if !cfg.Follow {
		return kafka.ReadToEnd(ctx, cfg.Kafka.ClientOpts(), topic, nil, print)
	}
	cl, err := kgo.NewClient(cfg.Kafka.ClientOpts(
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			cfg.Logger.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		var err error
		fetches.EachRecord(func(r *kgo.Record) {
			if err == nil {
				err = print(r)
			}
		})
		if err != nil {
			return err
		}
	}
}
