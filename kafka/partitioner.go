package kafka

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/schema"
)

// Partitioner is the partitioner every Parley producer uses. Records for
// the outcomes and sequencer-state topics go to the partition set on the
// record (the connector's reply partition; the command's partition). All
// other records are keyed by conversation and go to murmur2(key) mod n, as
// Kafka's default partitioner does, so outside clients agree on where a
// conversation lives.
func Partitioner(t schema.Topics) kgo.Partitioner {
	manual := kgo.ManualPartitioner()
	byKey := kgo.StickyKeyPartitioner(nil)
	return partitioner{manual: manual, byKey: byKey, t: t}
}

type partitioner struct {
	manual, byKey kgo.Partitioner
	t             schema.Topics
}

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.t.Outcomes || topic == p.t.SequencerState {
		return p.manual.ForTopic(topic)
	}
	return p.byKey.ForTopic(topic)
}

// KeyPartition returns the partition of key among n partitions: murmur2 of
// the key, as Kafka's default partitioner computes it.
// It is safe for concurrent use and allocates nothing (the sequencer calls
// it for every command).
func KeyPartition(key []byte, n int32) int32 {
	r := keyRecords.Get().(*kgo.Record)
	r.Key = key
	p := keyHash.Partition(r, int(n))
	r.Key = nil
	keyRecords.Put(r)
	return int32(p)
}

// keyHash only ever sees records with a key, for which the sticky key
// partitioner is a pure function of key and n.
var keyHash = kgo.StickyKeyPartitioner(nil).ForTopic("")

// keyRecords are the records KeyPartition hands keyHash: a record passed
// through the partitioner's interface escapes, and a kgo.Record is large.
var keyRecords = sync.Pool{New: func() any { return new(kgo.Record) }}
