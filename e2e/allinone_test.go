package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parley-im/parley/allinone"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// TestAllInOneRestart is run 6: the all-in-one node stopped and started on
// the same data dir keeps every conversation, continues every seq, and
// still recognises a retry of a message sent before the restart.
func TestAllInOneRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() (*allinone.Node, func()) {
		n, err := allinone.Start(allinone.Config{DataDir: dir, BrokerListen: "127.0.0.1:0", Partitions: 4, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		return n, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("all-in-one Run: %v", err)
			}
		}
	}
	conv := newMsgID()
	reply := &parleyv1.ReplyTo{Node: replyNode, Partition: 0}
	send := func(i int) *parleyv1.Command {
		return &parleyv1.Command{
			Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: fmt.Sprintf("m%d", i), ReplyTo: reply,
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(fmt.Sprintf("%d", i))}},
		}
	}
	lastSeq := func(n *allinone.Node) int64 {
		h, err := n.Store().Conversation(context.Background(), conv)
		if err != nil {
			return 0
		}
		return h.LastSeq
	}

	n, stop := start()
	c := &cluster{t: t, kc: n.Kafka()}
	cmds := []*parleyv1.Command{{
		Conv: conv, MsgId: newMsgID(), From: "alice", ReplyTo: reply,
		Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}},
	}}
	for i := 1; i <= 10; i++ {
		cmds = append(cmds, send(i))
	}
	c.produce(cmds...)
	waitFor(t, time.Minute, "the first 11 events in the store", func() bool { return lastSeq(n) == 11 })
	stop()

	n, stop = start()
	t.Cleanup(stop) // after the outcome collector's cleanup, which is registered later
	c = &cluster{t: t, kc: n.Kafka()}
	evs, _, err := n.Store().Events(context.Background(), conv, store.Range{Limit: 100})
	if err != nil || len(evs) != 11 {
		t.Fatalf("after restart the store has %d events (%v), want 11", len(evs), err)
	}
	outs := c.collectOutcomes(context.Background())
	retry := send(4) // sent before the restart as seq 5
	var more []*parleyv1.Command
	for i := 11; i <= 20; i++ {
		more = append(more, send(i))
	}
	c.produce(append([]*parleyv1.Command{retry}, more...)...)
	waitFor(t, time.Minute, "21 events in the store", func() bool { return lastSeq(n) == 21 })
	waitFor(t, 10*time.Second, "the retry's outcome", func() bool { return len(outs.get(retry.MsgId)) == 1 })
	if o := outs.get(retry.MsgId)[0]; o.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE || o.Event.Seq != 5 || o.Event.MsgId != cmds[4].MsgId {
		t.Fatalf("retry of a pre-restart message answered %v, want the original seq 5", o)
	}
	var seqs []int64
	for _, ev := range c.events() {
		if ev.Conv == conv {
			seqs = append(seqs, ev.Seq)
		}
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("log seqs after restart %v: want 1..21 with no reuse", seqs)
		}
	}
	if len(seqs) != 21 {
		t.Fatalf("log has %d events, want 21", len(seqs))
	}
}
