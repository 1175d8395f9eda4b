package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestTap runs `parley tap --follow=false` against a log and checks that it
// prints every event as one JSON line in the protocol's event form.
func TestTap(t *testing.T) {
	c := newCluster(t)
	outs := c.collectOutcomes(context.Background())
	runInProcess(t, "sequencer", newSequencer(t, c, "seq-tap").Run)
	conv := newMsgID()
	reply := &parleyv1.ReplyTo{Node: replyNode}
	last := &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "bob", Cmid: "b1", ReplyTo: reply,
		Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(`{"text":"hi \"there\""}`)}}}
	c.produce(
		&parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", ReplyTo: reply,
			Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}, Title: "team"}}},
		last,
	)
	waitFor(t, 30*time.Second, "the message outcome", func() bool { return len(outs.get(last.MsgId)) == 1 })

	out, err := exec.Command(parleyBin, "tap", "--brokers", c.broker.Addr(), "--follow=false").Output()
	if err != nil {
		t.Fatalf("parley tap: %v", err)
	}
	var got []schema.EventJSON
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var ev schema.EventJSON
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("tap line %q: %v", sc.Text(), err)
		}
		got = append(got, ev)
	}
	if len(got) != 2 {
		t.Fatalf("tap printed %d events, want 2:\n%s", len(got), out)
	}
	c0, m := got[0], got[1]
	if c0.Type != "created" || c0.Seq != 1 || c0.Kind != "group" || c0.Title != "team" || len(c0.Members) != 2 || c0.From != "alice" {
		t.Errorf("created event printed as %+v", c0)
	}
	if m.Type != "message" || m.Seq != 2 || m.From != "bob" || m.CMID != "b1" || m.MsgID != last.MsgId ||
		string(m.Body) != `{"text":"hi \"there\""}` || m.Kind != "text" || m.TS == 0 {
		t.Errorf("message event printed as %+v (body %s)", m, m.Body)
	}
}
