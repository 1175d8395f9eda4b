package e2e

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// dumpOffsets describes where each topic's partitions end and how far
// read_committed readers can see, and the open transactions: what a test
// prints when it times out.
func (c *cluster) dumpOffsets() string {
	cl := c.client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	t := c.kc.Topics()
	var out string
	for _, topic := range []string{t.Commands, t.Events, t.Outcomes, t.SequencerState} {
		hw, _ := adm.ListEndOffsets(ctx, topic)
		ls, _ := adm.ListCommittedOffsets(ctx, topic)
		out += topic + ":"
		hw.Each(func(o kadm.ListedOffset) {
			l, _ := ls.Lookup(topic, o.Partition)
			if l.Offset != o.Offset {
				out += fmt.Sprintf(" p%d hw=%d lso=%d", o.Partition, o.Offset, l.Offset)
			}
		})
		out += "\n"
	}
	txns, err := adm.ListTransactions(ctx, nil, nil)
	out += fmt.Sprintf("transactions: %v %v\n", txns, err)
	return out
}

// rereadOutcomes reads the whole outcomes topic afresh and reports how many
// distinct commands it answers, to tell a lagging collector from a missing
// outcome.
func (c *cluster) rereadOutcomes(o *outcomes) string {
	ids := make(map[string]int)
	n := 0
	err := kafka.ReadToEnd(context.Background(), c.kc.ClientOpts(), c.kc.Topics().Outcomes, nil, func(r *kgo.Record) error {
		b := new(parleyv1.OutcomeBatch)
		if err := proto.Unmarshal(r.Value, b); err != nil {
			return err
		}
		for _, out := range b.Outcomes {
			ids[out.MsgId]++
			n++
		}
		return nil
	})
	missing := 0
	o.mu.Lock()
	for id := range ids {
		if len(o.byID[id]) == 0 {
			missing++
		}
	}
	o.mu.Unlock()
	return fmt.Sprintf("reread: %d outcomes for %d commands (err %v); collector has %d for %d; %d reread ids missing in collector", n, len(ids), err, o.count(), o.answered(), missing)
}

// missingByPartition reports, per commands partition, how many of w's
// commands have no outcome.
func (c *cluster) missingByPartition(w *workload, o *outcomes) string {
	hist := make(map[int32]int)
	all := append(append([]*parleyv1.Command(nil), w.creates...), w.sends...)
	for _, cmd := range all {
		if len(o.get(cmd.MsgId)) == 0 {
			hist[kafka.KeyPartition([]byte(cmd.Conv), testPartitions)]++
		}
	}
	cl := c.client()
	defer cl.Close()
	off, err := kadm.NewClient(cl).FetchOffsets(context.Background(), "parley-sequencer")
	return fmt.Sprintf("missing by partition %v; group offsets %v %v", hist, off, err)
}
