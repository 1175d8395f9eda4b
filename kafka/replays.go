package kafka

import (
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// SkipReplays takes out of fetches, in place, the records of each
// partition below the offset handled(topic, partition) gives (the offset
// after the last record the consumer has handled, if it knows one), and
// below the offset after an earlier record of the same partition in
// fetches. skipped hears of each run it takes out: the partition, the
// first offset taken out, the offset it was below and how many.
//
// A consumer's Kafka client hands back records it handed over before when
// it goes back in the log, as it does when it suspects the log was
// truncated under it: the leader's answer about the epoch it consumed at
// does not match what it consumed, or the leader does not know that epoch
// (the embedded broker answers so when every leader epoch moves on before
// anything is written at the new one). It then resets to where the answer,
// or its reset policy (often the partition's start), points.
func SkipReplays(fetches kgo.Fetches, handled func(topic string, partition int32) (next int64, ok bool),
	skipped func(topic string, partition int32, from, next int64, n int)) {
	type tp struct {
		topic     string
		partition int32
	}
	var seen map[tp]int64 // the offset after the last record kept
	for i := range fetches {
		for j := range fetches[i].Topics {
			ft := &fetches[i].Topics[j]
			for k := range ft.Partitions {
				fp := &ft.Partitions[k]
				if len(fp.Records) == 0 {
					continue
				}
				key := tp{ft.Topic, fp.Partition}
				next, ok := seen[key]
				if !ok {
					next, ok = handled(ft.Topic, fp.Partition)
				}
				if from := fp.Records[0].Offset; ok && from < next {
					n := slices.IndexFunc(fp.Records, func(r *kgo.Record) bool { return r.Offset >= next })
					if n < 0 {
						n = len(fp.Records)
					}
					skipped(ft.Topic, fp.Partition, from, next, n)
					fp.Records = fp.Records[n:]
				}
				if len(fp.Records) > 0 {
					if seen == nil {
						seen = make(map[tp]int64)
					}
					seen[key] = fp.Records[len(fp.Records)-1].Offset + 1
				}
			}
		}
	}
}

// Replays keeps a group consumer from handling a record twice while it
// holds the record's partition: Skip takes out of a poll's fetches what
// the consumer handed on before (SkipReplays), and Forget lets go of
// partitions it no longer holds, whose next owner starts from the
// committed offsets. Its methods may be called from any goroutine.
type Replays struct {
	mu   sync.Mutex
	next map[string]map[int32]int64 // topic -> partition -> offset after the last record handed on
}

// Skip takes out of fetches the records below those handed on by earlier
// calls (reporting each run to skipped), and remembers where each
// partition's records end now.
func (r *Replays) Skip(fetches kgo.Fetches, skipped func(topic string, partition int32, from, next int64, n int)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	SkipReplays(fetches, func(topic string, partition int32) (int64, bool) {
		next, ok := r.next[topic][partition]
		return next, ok
	}, skipped)
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		if r.next == nil {
			r.next = make(map[string]map[int32]int64)
		}
		if r.next[p.Topic] == nil {
			r.next[p.Topic] = make(map[int32]int64)
		}
		r.next[p.Topic][p.Partition] = p.Records[len(p.Records)-1].Offset + 1
	})
}

// Forget lets go of the partitions in lost (topic -> partitions).
func (r *Replays) Forget(lost map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for topic, ps := range lost {
		for _, p := range ps {
			delete(r.next[topic], p)
		}
	}
}
