package sequencer

import (
	"fmt"
	"testing"

	"github.com/segmentio/ksuid"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// windowCmids is what the cmid index finds for each cmid in c's window:
// the seq of the entry itself, if the index is right (0: found none).
func windowCmids(c *convState) map[cmidKey]int64 {
	found := make(map[cmidKey]int64)
	for _, e := range windowEntries(c) {
		if e.Cmid != "" {
			r, _ := findSeq(c, e.From, e.Cmid)
			found[cmidKey{e.From, e.Cmid}] = r
		}
	}
	return found
}

// findSeq is the seq of the entry findCmid finds, if any.
func findSeq(c *convState, from, cmid string) (int64, bool) {
	r, ok := c.findCmid(from, cmid)
	if !ok {
		return 0, false
	}
	return r.entry().seq, true
}

// TestCmidIndex sends through a window of 64 entries many times over, and
// after every command checks that the index finds each entry in the
// window, finds none that left it, and stays within a few windows of
// slots; that a retry within the window is a duplicate and one from beyond
// it is sequenced again. It does so with real hashes, with keys forced to
// share one of two hashes, and with every key on one hash (all but one
// live key in clash).
func TestCmidIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		hash func(cmidKey) uint64
	}{
		{"maphash", cmidHash},
		{"two hashes", func(k cmidKey) uint64 { return uint64(len(k.cmid) % 2) }},
		{"one hash", func(cmidKey) uint64 { return 7 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(h func(cmidKey) uint64) { cmidHash = h }(cmidHash)
			cmidHash = tc.hash
			const window = 64
			p := newPartition(rules{windowMinEntries: window, maxMembers: 10})
			conv := ksuid.New().String()
			users := []string{"ann", "bob", "cy"}
			create := &parleyv1.Command{Conv: conv, MsgId: ksuid.New().String(), From: users[0], Cmid: "create",
				Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: users[1:]}}}
			if _, out := p.apply(create, 1); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
				t.Fatalf("create: %v %q", out.Reason, out.Message)
			}
			c := p.convs[conv]
			send := func(from, cmid string) *parleyv1.Outcome {
				cmd := &parleyv1.Command{Conv: conv, MsgId: ksuid.New().String(), From: from, Cmid: cmid,
					Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(`{"text":"hi"}`)}}}
				_, out := p.apply(cmd, 1)
				return out
			}
			seqs := make(map[cmidKey]int64) // every key sent, at its latest seq
			for i := range 20 * window {
				k := cmidKey{users[i%3], fmt.Sprintf("c%d", i)}
				out := send(k.from, k.cmid)
				if out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
					t.Fatalf("send %d: %v %q", i, out.Reason, out.Message)
				}
				seqs[k] = out.Event.Seq
				if i%7 == 0 { // a retry within the window
					if out := send(k.from, k.cmid); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE || out.Event.Seq != seqs[k] {
						t.Fatalf("retry of %v: %v, seq %d; want duplicate of %d", k, out.Status, out.GetEvent().GetSeq(), seqs[k])
					}
				}
				start := c.windowStart()
				for k, seq := range seqs {
					got, found := findSeq(c, k.from, k.cmid)
					switch {
					case seq >= start && got != seq:
						t.Fatalf("after send %d: %v (seq %d, window from %d) found as %d (%v)", i, k, seq, start, got, found)
					case seq < start && found:
						t.Fatalf("after send %d: %v (seq %d) found after it left the window (from %d)", i, k, seq, start)
					}
				}
				if n := len(c.cmids.cur) + len(c.cmids.prev) + len(c.cmids.clash); n > 3*window {
					t.Fatalf("after send %d: the index holds %d slots for a window of %d", i, n, c.entries)
				}
			}
			// A retry from beyond the window is a new message, found
			// afterwards at its new seq.
			k := cmidKey{users[0], "c0"}
			if _, found := c.findCmid(k.from, k.cmid); found {
				t.Fatal("the first send is still in the window")
			}
			out := send(k.from, k.cmid)
			if out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
				t.Fatalf("retry from beyond the window: %v %q", out.Status, out.Message)
			}
			if got, _ := findSeq(c, k.from, k.cmid); got != out.Event.Seq {
				t.Fatalf("resent %v found as %d, want seq %d", k, got, out.Event.Seq)
			}
			// Restored from its changelog, the window's index finds the
			// same entries, shared hashes and all.
			p2, err := restore(flushInto(t, p, nil), p.rules)
			if err != nil {
				t.Fatal(err)
			}
			want, got := windowCmids(c), windowCmids(p2.convs[conv])
			if len(got) != len(want) || len(want) < window {
				t.Fatalf("restored, the index finds %d keys; in memory %d", len(got), len(want))
			}
			for k, seq := range want {
				if seq == 0 || got[k] != seq {
					t.Fatalf("%v: found at seq %d in memory, %d restored", k, seq, got[k])
				}
			}
		})
	}
}
