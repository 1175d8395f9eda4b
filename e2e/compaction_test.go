package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
)

// TestWindowSurvivesCompaction sends more messages than the dedup window
// holds, compacts the state changelog on the broker, and checks that a new
// sequencer restored from the compacted changelog makes the same decisions:
// recent retries are duplicates, old targets are out of the edit window.
func TestWindowSurvivesCompaction(t *testing.T) {
	c := newCluster(t)
	outs := c.collectOutcomes(context.Background())
	newSeq := func(node string) *sequencer.Sequencer {
		s, err := sequencer.New(sequencer.Config{
			Kafka: c.kc, NodeID: node, Logger: testLogger(t),
			WindowMinEntries: 100, WindowMinAge: time.Nanosecond, // a window of about 100 entries
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stop := runInProcess(t, "sequencer 1", newSeq("seq-c1").Run)

	conv := newMsgID()
	reply := &parleyv1.ReplyTo{Node: replyNode}
	cmd := func(cmid string, body proto.Message) *parleyv1.Command {
		c := &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: cmid, ReplyTo: reply}
		return must(schema.SetBody(c, body))
	}
	text := &parleyv1.Send{Kind: "text", Body: []byte(`"x"`)}
	c.produce(cmd("", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}))
	var sends []*parleyv1.Command
	for i := range 1000 {
		s := cmd(fmt.Sprintf("a%d", i), text)
		sends = append(sends, s)
		if i%50 == 49 { // many transactions, so the changelog has history to compact
			c.produce(sends[i-49 : i+1]...)
			last := s.MsgId
			waitFor(t, 30*time.Second, "a batch of outcomes", func() bool { return len(outs.get(last)) == 1 })
		}
	}
	stop()

	stateLen := func() int {
		n := 0
		err := kafka.ReadToEnd(context.Background(), c.kc.ClientOpts(), c.kc.Topics().SequencerState, nil, func(*kgo.Record) error { n++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := stateLen()
	c.broker.Cluster().Compact()
	after := stateLen()
	if after >= before {
		t.Fatalf("compaction left %d of %d changelog records", after, before)
	}
	t.Logf("changelog compacted from %d to %d records", before, after)

	runInProcess(t, "sequencer 2", newSeq("seq-c2").Run)
	recent, old := cmd("a995", text), cmd("a0", text)
	editOld := cmd("e1", &parleyv1.Edit{Target: 2, Body: []byte(`"late"`)})
	editRecent := cmd("e2", &parleyv1.Edit{Target: 990, Body: []byte(`"fixed"`)})
	c.produce(recent, old, editOld, editRecent)
	waitFor(t, 30*time.Second, "the outcomes", func() bool { return len(outs.get(editRecent.MsgId)) == 1 })
	check := func(name string, cm *parleyv1.Command, status parleyv1.OutcomeStatus, reason parleyv1.Reason, seq int64) {
		o := outs.get(cm.MsgId)
		if len(o) != 1 || o[0].Status != status || o[0].Reason != reason || o[0].GetEvent().GetSeq() != seq {
			t.Errorf("%s: outcome %v, want %v %v seq %d", name, o, status, reason, seq)
		}
	}
	check("retry of a recent message", recent, parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, 0, 997)
	check("cmid reused after the window", old, parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED, 0, 1002)
	check("edit of an old message", editOld, parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED, parleyv1.Reason_REASON_TARGET_EXPIRED, 0)
	check("edit of a recent message", editRecent, parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED, 0, 1003)
}
