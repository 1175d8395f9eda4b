package kafka

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadToEnd reads the given partitions of topic from their start up to
// their end, with read_committed isolation, calling fn for every committed
// data record in order. It returns once every partition is read through, or
// with the first error (fn's error included). opts must name the brokers
// (Config.ClientOpts); ReadToEnd adds its own consume options. partitions
// nil means all partitions.
//
// It guarantees that every record committed before it began is passed to
// fn. To keep that promise it first waits until every transaction that was
// open on those partitions when it began has ended (the last stable offset
// has reached the high watermark it saw first): an open transaction hides
// every record after its first one, including records committed later by
// other producers. The wait is bounded by the producers' transaction
// timeout, and by ctx.
func ReadToEnd(ctx context.Context, opts []kgo.Opt, topic string, partitions []int32, fn func(*kgo.Record) error) error {
	var from map[int32]int64
	if partitions != nil {
		from = make(map[int32]int64, len(partitions))
		for _, p := range partitions {
			from[p] = 0 // below the start: the start
		}
	}
	return ReadFrom(ctx, opts, topic, from, fn)
}

// ReadFrom is ReadToEnd from a given offset of each partition: from maps
// the partitions to read to the offset to start at; nil means every
// partition from its start. An offset of 0 reads from the partition's
// start, wherever that is; any other must lie within the partition's log
// (its start to its end), or ReadFrom reads nothing and returns a
// *RangeError: the records from there are gone, or the log is not the
// one the offset was taken from.
func ReadFrom(ctx context.Context, opts []kgo.Opt, topic string, from map[int32]int64, fn func(*kgo.Record) error) error {
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	adm := kadm.NewClient(admCl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		admCl.Close()
		return fmt.Errorf("kafka: list start offsets of %s: %w", topic, err)
	}
	want := make(map[int32]bool)
	if from == nil {
		for p := range starts[topic] {
			want[p] = true
		}
	} else {
		for p := range from {
			if _, ok := starts.Lookup(topic, p); !ok {
				admCl.Close()
				return fmt.Errorf("kafka: %s has no partition %d", topic, p)
			}
			want[p] = true
		}
	}
	ends, err := stableEnds(ctx, adm, topic, want)
	admCl.Close()
	if err != nil {
		return err
	}

	var gone RangeError
	for p, at := range from {
		start, _ := starts.Lookup(topic, p)
		if at != 0 && (at < start.Offset || at > ends[p]) {
			gone.Topic = topic
			gone.Partitions = append(gone.Partitions, p)
		}
	}
	if len(gone.Partitions) > 0 {
		slices.Sort(gone.Partitions)
		return &gone
	}

	// remaining: partition -> the last offset that must be seen.
	remaining := make(map[int32]int64)
	consume := make(map[int32]kgo.Offset)
	for p := range want {
		start, _ := starts.Lookup(topic, p)
		at := max(start.Offset, from[p])
		if end := ends[p]; end > at {
			remaining[p] = end - 1
			consume[p] = kgo.NewOffset().At(at)
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

// stableEnds returns, for each wanted partition, an end offset at or past
// the partition's high watermark when it was called, below which every
// transaction has ended.
func stableEnds(ctx context.Context, adm *kadm.Client, topic string, want map[int32]bool) (map[int32]int64, error) {
	hw, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = hw.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: list end offsets of %s: %w", topic, err)
	}
	for {
		lso, err := adm.ListCommittedOffsets(ctx, topic)
		if err == nil {
			err = lso.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("kafka: list stable offsets of %s: %w", topic, err)
		}
		ends := make(map[int32]int64, len(want))
		stable := true
		for p := range want {
			h, _ := hw.Lookup(topic, p)
			l, _ := lso.Lookup(topic, p)
			if l.Offset < h.Offset {
				stable = false
				break
			}
			ends[p] = l.Offset
		}
		if stable {
			return ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RangeError is ReadFrom's error for partitions whose offset to read from
// lies outside their log.
type RangeError struct {
	Topic      string
	Partitions []int32
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("kafka: %s: the offsets to read partitions %v from are outside their logs", e.Topic, e.Partitions)
}
