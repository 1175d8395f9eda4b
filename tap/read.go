package tap

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
)

// runFrom reads the partitions cfg selects from the offsets it selects:
// to the end when it began, or on and on with cfg.Follow.
func runFrom(ctx context.Context, cfg Config, print func(*kgo.Record) error) error {
	topic := cfg.Kafka.Topics().Events
	admCl, err := kgo.NewClient(cfg.Kafka.ClientOpts()...)
	if err != nil {
		return err
	}
	pos, err := startOffsets(ctx, kadm.NewClient(admCl), cfg, topic)
	admCl.Close()
	if err != nil {
		return err
	}
	if !cfg.Follow {
		return kafka.ReadFrom(ctx, cfg.Kafka.ClientOpts(), topic, pos, print)
	}
	consume := make(map[int32]kgo.Offset, len(pos))
	for p, o := range pos {
		consume[p] = kgo.NewOffset().At(o)
	}
	cl, err := kgo.NewClient(cfg.Kafka.ClientOpts(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	return follow(ctx, cl, cfg.Logger, print)
}

// startOffsets returns the offset each selected partition starts at.
func startOffsets(ctx context.Context, adm *kadm.Client, cfg Config, topic string) (pos map[int32]int64, err error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("tap: list start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("tap: list end offsets of %s: %w", topic, err)
	}
	n := int32(len(starts[topic]))
	for p := range cfg.Offsets {
		if p != AllPartitions && p >= n {
			return nil, fmt.Errorf("%w: an offset is given for partition %d, but %s has %d partitions (0 to %d)", ErrBadConfig, p, topic, n, n-1)
		}
	}
	var wanted []int32
	if len(cfg.Convs) > 0 {
		seen := make(map[int32]bool)
		for _, c := range cfg.Convs {
			if p := kafka.KeyPartition([]byte(c), n); !seen[p] {
				seen[p] = true
				wanted = append(wanted, p)
			}
		}
		sort.Slice(wanted, func(i, j int) bool { return wanted[i] < wanted[j] })
	} else {
		for p := range n {
			wanted = append(wanted, p)
		}
	}
	var after kadm.ListedOffsets
	if !cfg.Since.IsZero() {
		after, err = adm.ListOffsetsAfterMilli(ctx, cfg.Since.UnixMilli(), topic)
		if err == nil {
			err = after.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("tap: find the offsets of %s at %s: %w", topic, cfg.Since.Format(time.RFC3339Nano), err)
		}
	}
	pos = make(map[int32]int64, len(wanted))
	for _, p := range wanted {
		s, ok1 := starts.Lookup(topic, p)
		e, ok2 := ends.Lookup(topic, p)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("tap: no offsets listed for %s/%d", topic, p)
		}
		o := s.Offset
		if v, ok := cfg.Offsets[p]; ok {
			o = v
		} else if v, ok := cfg.Offsets[AllPartitions]; ok {
			o = v
		} else if after != nil {
			o = e.Offset // no record at or after the time
			if a, ok := after.Lookup(topic, p); ok && a.Offset >= 0 {
				o = a.Offset
			}
		}
		pos[p] = min(max(o, s.Offset), e.Offset)
	}
	return pos, nil
}
