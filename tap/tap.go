package tap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Config configures Run. With no filter set, Run prints every committed
// event from the start of the topic.
type Config struct {
	Kafka kafka.Config
	// Follow keeps reading new events after the end; otherwise Run returns
	// once it has printed everything committed when it started.
	Follow bool
	// Convs, if not empty, keeps only the events of these conversations,
	// and only the partitions that hold them are read: murmur2 of the
	// conversation id modulo the topic's partition count, where the
	// sequencer writes them. That holds as long as the events topic keeps
	// the partition count it had when the events were written.
	Convs []string
	// Types, if not empty, keeps only the events of these types.
	Types []parleyv1.EventType
	// Offsets, if not nil, is where reading starts in each partition read
	// (see Offsets). Not together with Since.
	Offsets Offsets
	// Since, if not zero, keeps only the events whose record timestamp
	// (the time the sequencer wrote them, close to their ts field) is at
	// or after Since. Each partition read starts at its first record at or
	// after Since, as Kafka's offsets-by-timestamp lookup finds it; records
	// after that one stamped earlier are left out (a partition's
	// timestamps need not be in order: the broker stamps transaction
	// markers, and producers' clocks differ). Not together with Offsets.
	Since time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Offsets maps a partition to the offset reading starts at. The key
// AllPartitions gives the offset of every partition not named; a partition
// neither names starts at its beginning. An offset past a partition's end
// starts at the end (only events written later are printed); one before
// the start of its log (removed by retention) starts at the log's start.
type Offsets map[int32]int64

// AllPartitions is the key of Offsets that applies to every partition not
// named on its own.
const AllPartitions int32 = -1

// ErrBadConfig is wrapped by the errors of a Config that cannot work.
var ErrBadConfig = errors.New("tap: bad configuration")

func (c Config) validate() error {
	for _, conv := range c.Convs {
		if !schema.ValidConvID(conv) {
			return fmt.Errorf("%w: %q is not a conversation id (1 to %d characters of A-Z a-z 0-9 _ . -)", ErrBadConfig, conv, schema.MaxConvIDLen)
		}
	}
	for _, t := range c.Types {
		if schema.EventTypeName(t) == "" {
			return fmt.Errorf("%w: unknown event type %d", ErrBadConfig, t)
		}
	}
	for p, o := range c.Offsets {
		if p < AllPartitions {
			return fmt.Errorf("%w: partition %d", ErrBadConfig, p)
		}
		if o < 0 {
			return fmt.Errorf("%w: negative offset %d", ErrBadConfig, o)
		}
	}
	if c.Offsets != nil && !c.Since.IsZero() {
		return fmt.Errorf("%w: a start offset and a start time together", ErrBadConfig)
	}
	return nil
}

// Run writes the committed events that cfg selects to w, in the order of
// each partition (so each conversation's in seq order; partitions
// interleave). Records that are undecodable or malformed
// (schema.DecodeEvent) are reported on the logger, with the reason, and
// skipped; with a conversation filter, only those keyed by one of its
// conversations are.
func Run(ctx context.Context, cfg Config, w io.Writer) error {
	cfg.Kafka = cfg.Kafka.WithDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	keep := newFilter(cfg)
	print := func(r *kgo.Record) error {
		if !keep.key(r.Key) || (!cfg.Since.IsZero() && r.Timestamp.UnixMilli() < cfg.Since.UnixMilli()) {
			return nil
		}
		ev, err := schema.DecodeEvent(r.Key, r.Value)
		if err != nil {
			cfg.Logger.Warn("skipping an event record", "partition", r.Partition, "offset", r.Offset, "reason", schema.SkipReason(err), "err", err)
			return nil
		}
		if !keep.event(ev) {
			return nil
		}
		return enc.Encode(schema.ToJSON(ev))
	}
	topic := cfg.Kafka.Topics().Events
	if len(cfg.Convs) > 0 || cfg.Offsets != nil || !cfg.Since.IsZero() {
		return runFrom(ctx, cfg, print)
	}
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
	return follow(ctx, cl, cfg.Logger, print)
}

// follow prints what cl fetches until ctx ends, logging fetch errors
// (the client retries them).
func follow(ctx context.Context, cl *kgo.Client, log *slog.Logger, print func(*kgo.Record) error) error {
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		var err error
		fetches.EachRecord(func(r *kgo.Record) {
			if err == nil && !r.Attrs.IsControl() {
				err = print(r)
			}
		})
		if err != nil {
			return err
		}
	}
}

// filter holds the conversation and type filters as sets; a nil set keeps
// everything.
type filter struct {
	convs map[string]bool
	types map[parleyv1.EventType]bool
}

func newFilter(cfg Config) filter {
	var f filter
	if len(cfg.Convs) > 0 {
		f.convs = make(map[string]bool, len(cfg.Convs))
		for _, c := range cfg.Convs {
			f.convs[c] = true
		}
	}
	if len(cfg.Types) > 0 {
		f.types = make(map[parleyv1.EventType]bool, len(cfg.Types))
		for _, t := range cfg.Types {
			f.types[t] = true
		}
	}
	return f
}

// key reports whether a record keyed key may hold a wanted event: the key
// of an event is its conversation.
func (f filter) key(k []byte) bool { return f.convs == nil || f.convs[string(k)] }

func (f filter) event(ev *parleyv1.Event) bool {
	return (f.convs == nil || f.convs[ev.Conv]) && (f.types == nil || f.types[ev.Type])
}
