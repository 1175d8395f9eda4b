package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestInvalidCommands is run 7: invalid commands become rejections with
// reasons, take no seq, and a malformed record never stops the sequencer.
func TestInvalidCommands(t *testing.T) {
	c := newCluster(t)
	outs := c.collectOutcomes(context.Background())
	seq := newSequencer(t, c, "seq-invalid")
	runInProcess(t, "sequencer", seq.Run)

	reply := &parleyv1.ReplyTo{Node: replyNode, Partition: 0}
	cmd := func(conv, from, cmid string, body proto.Message) *parleyv1.Command {
		c := &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: from, Cmid: cmid, ReplyTo: reply}
		return must(schema.SetBody(c, body))
	}
	text := &parleyv1.Send{Kind: "text", Body: []byte(`"hello"`)}
	g := newMsgID()
	create := cmd(g, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}})
	first := cmd(g, "alice", "a1", text)
	c.produce(create, first)

	type want struct {
		cmd    *parleyv1.Command
		reason parleyv1.Reason
	}
	invalid := []want{
		{cmd(g, "carol", "c1", text), parleyv1.Reason_REASON_NOT_MEMBER},
		{cmd(g, "bob", "b1", &parleyv1.Edit{Target: 2, Body: []byte(`"mine now"`)}), parleyv1.Reason_REASON_NOT_AUTHOR},
		{cmd(newMsgID(), "alice", "a2", text), parleyv1.Reason_REASON_CONV_NOT_FOUND},
		{cmd(g, "alice", "", text), parleyv1.Reason_REASON_MALFORMED}, // no cmid
		{cmd(g, "alice", "a3", &parleyv1.Send{Kind: "text", Body: []byte("{nope")}), parleyv1.Reason_REASON_MALFORMED},
	}
	for _, w := range invalid {
		c.produce(w.cmd)
	}
	// Records no well-behaved connector writes: garbage, a key that is not
	// the command's conversation, and a command on the wrong partition.
	c.produceRaw([]byte(g), []byte("\xff\xff not a protobuf"))
	c.produceRaw([]byte(g), nil)
	misKeyed := cmd(g, "alice", "a4", text)
	v, _ := proto.Marshal(misKeyed)
	c.produceRaw([]byte("another-conv"), v)
	invalid = append(invalid, want{misKeyed, parleyv1.Reason_REASON_MALFORMED})

	misplaced := cmd(g, "alice", "a5", text)
	v, _ = proto.Marshal(misplaced)
	right := kafka.KeyPartition([]byte(g), testPartitions)
	manual := c.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := manual.ProduceSync(context.Background(), &kgo.Record{
		Topic: c.kc.Topics().Commands, Partition: (right + 1) % testPartitions, Key: []byte(g), Value: v,
	}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	manual.Close()
	invalid = append(invalid, want{misplaced, parleyv1.Reason_REASON_MALFORMED})

	// The sequencer goes on after all of that.
	last := cmd(g, "bob", "b2", text)
	c.produce(last)

	waitFor(t, time.Minute, "outcomes", func() bool { return len(outs.get(last.MsgId)) > 0 })
	for _, w := range invalid {
		waitFor(t, 10*time.Second, "a rejection", func() bool { return len(outs.get(w.cmd.MsgId)) > 0 })
		got := outs.get(w.cmd.MsgId)
		if len(got) != 1 || got[0].Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED || got[0].Reason != w.reason {
			t.Errorf("command %s by %s: outcomes %v, want one rejection %v", w.cmd.Cmid, w.cmd.From, got, w.reason)
		}
	}
	o := outs.get(last.MsgId)
	if len(o) != 1 || o[0].Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED || o[0].Event.Seq != 3 {
		t.Fatalf("send after the invalid commands: %v, want seq 3", o)
	}
	var seqs []int64
	for _, ev := range c.events() {
		if ev.Conv == g {
			seqs = append(seqs, ev.Seq)
		}
	}
	if len(seqs) != 3 || seqs[0] != 1 || seqs[2] != 3 {
		t.Fatalf("conversation events %v, want 1 2 3: rejections take no seq", seqs)
	}
	// The empty record decodes as an empty command and is rejected as
	// malformed; the garbage one cannot be decoded at all.
	if st := seq.Stats(); st.Undecodable != 1 {
		t.Fatalf("undecodable records counted %d, want 1", st.Undecodable)
	}
}

// TestHugeInvalidCommandsDoNotStall: commands whose fields are huge and
// invalid get rejections that still fit, with the rest of their batch, in
// the outcome records, and the sequencer goes on.
func TestHugeInvalidCommandsDoNotStall(t *testing.T) {
	c := newCluster(t)
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-huge").Run)
	reply := &parleyv1.ReplyTo{Node: replyNode}
	g := newMsgID()
	var cmds []*parleyv1.Command
	cmds = append(cmds, &parleyv1.Command{Conv: g, MsgId: newMsgID(), From: "alice", ReplyTo: reply,
		Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP}}})
	kind := strings.Repeat("\x01", 10_000) // quoted, each byte would take four
	for i := range 40 {
		cmds = append(cmds, &parleyv1.Command{Conv: g, MsgId: newMsgID(), From: "alice", Cmid: fmt.Sprint("h", i), ReplyTo: reply,
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: kind, Body: []byte("1")}}})
	}
	last := &parleyv1.Command{Conv: g, MsgId: newMsgID(), From: "alice", Cmid: "ok", ReplyTo: reply,
		Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte("1")}}}
	c.produce(append(cmds, last)...)
	waitFor(t, 30*time.Second, "the valid send's outcome", func() bool { return len(outs.get(last.MsgId)) == 1 })
	for _, cm := range cmds[1:] {
		if o := outs.get(cm.MsgId); len(o) != 1 || o[0].Reason != parleyv1.Reason_REASON_MALFORMED {
			t.Fatalf("huge invalid send: outcomes %v", o)
		}
	}
	if o := outs.get(last.MsgId)[0]; o.GetEvent().GetSeq() != 2 {
		t.Fatalf("valid send after them: %v, want seq 2", o)
	}
}
