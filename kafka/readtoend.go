package kafka

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadToEnd reads the given partitions of topic from their start up to the
// last stable offset each had when ReadToEnd began, with read_committed
// isolation, calling fn for every committed data record in order. It returns
// once every partition is read through, or with the first error (fn's error
// included). opts must name the brokers (Config.ClientOpts); ReadToEnd adds
// its own consume options. partitions nil means all partitions.
//
// It guarantees that every record committed before it began is passed to fn;
// records of transactions still open when it began are not.
func ReadToEnd(ctx context.Context, opts []kgo.Opt, topic string, partitions []int32, fn func(*kgo.Record) error) error {
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	ends, err := kadm.NewClient(admCl).ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	starts, err2 := kadm.NewClient(admCl).ListStartOffsets(ctx, topic)
	if err2 == nil {
		err2 = starts.Error()
	}
	admCl.Close()
	if err != nil {
		return fmt.Errorf("kafka: list end offsets of %s: %w", topic, err)
	}
	if err2 != nil {
		return fmt.Errorf("kafka: list start offsets of %s: %w", topic, err2)
	}

	want := make(map[int32]bool)
	if partitions == nil {
		for p := range ends[topic] {
			want[p] = true
		}
	} else {
		for _, p := range partitions {
			want[p] = true
		}
	}
	// remaining: partition -> the last offset that must be seen.
	remaining := make(map[int32]int64)
	consume := make(map[int32]kgo.Offset)
	for p := range want {
		end, ok := ends.Lookup(topic, p)
		if !ok {
			return fmt.Errorf("kafka: %s has no partition %d", topic, p)
		}
		start, _ := starts.Lookup(topic, p)
		if end.Offset > start.Offset {
			remaining[p] = end.Offset - 1
			consume[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(remaining) == 0 {
		return nil
	}

	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records (transaction markers) are kept so that a
		// partition whose last record is a marker is seen to end.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()

	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("kafka: read %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		var cbErr error
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			last, ok := remaining[fp.Partition]
			if !ok {
				return
			}
			for _, r := range fp.Records {
				if r.Offset > last {
					// The record at last was compacted away.
					delete(remaining, fp.Partition)
					break
				}
				if cbErr == nil && !r.Attrs.IsControl() {
					cbErr = fn(r)
				}
				if r.Offset == last {
					delete(remaining, fp.Partition)
				}
			}
		})
		if cbErr != nil {
			return cbErr
		}
	}
	return nil
}
