package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// workload is a set of commands with the answers the pipeline must give.
type workload struct {
	convs   []string
	members map[string][]string
	creates []*parleyv1.Command
	sends   []*parleyv1.Command // originals and retries, in production order
	// original maps each send's msg_id to the msg_id of the first command
	// with its (conv, from, cmid): itself for an original.
	original map[string]string
	// distinct counts the original sends per conversation.
	distinct map[string]int
}

const (
	membersPerConv = 5
	replyNode      = "e2e"
)

// newWorkload builds nSends original sends across nConvs group
// conversations and nSenders senders, plus retries of a fraction of them
// (same conv, from and cmid; new msg_id) placed after their originals.
func newWorkload(nConvs, nSenders, nSends int, retryFrac float64, seed uint64) *workload {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := &workload{members: make(map[string][]string), original: make(map[string]string), distinct: make(map[string]int)}
	sender := func(i int) string { return fmt.Sprintf("s%03d", i%nSenders) }
	replyPart := int32(0)
	reply := func() *parleyv1.ReplyTo {
		replyPart = (replyPart + 1) % testPartitions
		return &parleyv1.ReplyTo{Node: replyNode, Partition: replyPart}
	}
	for i := range nConvs {
		conv := newMsgID()
		var ms []string
		for j := 0; len(ms) < membersPerConv; j++ {
			u := sender(i*7 + j*41)
			if !contains(ms, u) {
				ms = append(ms, u)
			}
		}
		w.convs = append(w.convs, conv)
		w.members[conv] = ms
		w.creates = append(w.creates, &parleyv1.Command{
			Conv: conv, MsgId: newMsgID(), From: ms[0], ReplyTo: reply(),
			Body: &parleyv1.Command_Create{Create: &parleyv1.Create{
				Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: ms[1:], Title: "conv " + strconv.Itoa(i),
			}},
		})
	}
	counter := make(map[string]int)
	var originals []*parleyv1.Command
	for range nSends {
		conv := w.convs[rng.IntN(len(w.convs))]
		from := w.members[conv][rng.IntN(membersPerConv)]
		counter[from]++
		cmd := &parleyv1.Command{
			Conv: conv, MsgId: newMsgID(), From: from, Cmid: fmt.Sprintf("%s-%07d", from, counter[from]), ReplyTo: reply(),
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(fmt.Sprintf(`{"text":"m %d"}`, counter[from]))}},
		}
		w.original[cmd.MsgId] = cmd.MsgId
		w.distinct[conv]++
		originals = append(originals, cmd)
		w.sends = append(w.sends, cmd)
		if rng.Float64() < retryFrac {
			// A retry of a recent or an older original, placed now.
			orig := originals[len(originals)-1-rng.IntN(min(len(originals), 2000))]
			retry := proto.CloneOf(orig)
			retry.MsgId, retry.ReplyTo = newMsgID(), reply()
			w.original[retry.MsgId] = orig.MsgId
			w.sends = append(w.sends, retry)
		}
	}
	return w
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (w *workload) commands() int { return len(w.creates) + len(w.sends) }

// cmidCounter extracts the per-sender counter from a workload cmid.
func cmidCounter(cmid string) int {
	i := strings.LastIndexByte(cmid, '-')
	n, _ := strconv.Atoi(cmid[i+1:])
	return n
}

// check verifies the invariants over the log's events, the outcomes and,
// if st is not nil, the store.
func (w *workload) check(t *testing.T, events []*parleyv1.Event, outs *outcomes, st store.Store) {
	t.Helper()
	byConv := make(map[string][]*parleyv1.Event)
	for _, ev := range events {
		byConv[ev.Conv] = append(byConv[ev.Conv], ev)
	}
	if len(byConv) != len(w.convs) {
		t.Fatalf("events cover %d conversations, want %d", len(byConv), len(w.convs))
	}
	sendByID := make(map[string]*parleyv1.Command, len(w.sends))
	for _, c := range w.sends {
		sendByID[c.MsgId] = c
	}
	for _, conv := range w.convs {
		evs := byConv[conv]
		// Invariant 2: seqs 1..n in log order, no gap, no duplicate.
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				t.Fatalf("conv %s: event %d of the log has seq %d", conv, i, ev.Seq)
			}
		}
		if evs[0].Type != parleyv1.EventType_EVENT_TYPE_CREATED {
			t.Fatalf("conv %s: seq 1 is %v", conv, evs[0].Type)
		}
		// Invariant 1/3: each distinct send exactly once, under the
		// original's msg_id; each sender's order kept.
		seen := make(map[string]bool)
		last := make(map[string]int)
		for _, ev := range evs[1:] {
			cmd := sendByID[ev.MsgId]
			switch {
			case ev.Type != parleyv1.EventType_EVENT_TYPE_MESSAGE:
				t.Fatalf("conv %s seq %d: unexpected %v", conv, ev.Seq, ev.Type)
			case cmd == nil || w.original[ev.MsgId] != ev.MsgId:
				t.Fatalf("conv %s seq %d: msg_id %s is not an original send", conv, ev.Seq, ev.MsgId)
			case seen[ev.MsgId]:
				t.Fatalf("conv %s seq %d: %s sequenced twice", conv, ev.Seq, ev.MsgId)
			case cmd.Conv != conv || cmd.From != ev.From || cmd.Cmid != ev.Cmid || string(cmd.GetSend().Body) != string(ev.Body):
				t.Fatalf("conv %s seq %d: event %v does not match its command %v", conv, ev.Seq, ev, cmd)
			}
			seen[ev.MsgId] = true
			n := cmidCounter(ev.Cmid)
			if n <= last[ev.From] {
				t.Fatalf("conv %s: %s's command %d sequenced after %d", conv, ev.From, n, last[ev.From])
			}
			last[ev.From] = n
		}
		if len(seen) != w.distinct[conv] {
			t.Fatalf("conv %s: %d messages sequenced, %d sent", conv, len(seen), w.distinct[conv])
		}
	}
	if outs != nil {
		w.checkOutcomes(t, byConv, outs)
	}
	if st != nil {
		checkStore(t, st, byConv)
	}
}

// checkOutcomes verifies that every command got exactly one outcome, and
// that a retry was answered with its original's msg_id and seq.
func (w *workload) checkOutcomes(t *testing.T, byConv map[string][]*parleyv1.Event, outs *outcomes) {
	t.Helper()
	seqOf := make(map[string]int64)
	for _, evs := range byConv {
		for _, ev := range evs {
			seqOf[ev.MsgId] = ev.Seq
		}
	}
	for _, c := range w.creates {
		got := outs.get(c.MsgId)
		if len(got) != 1 || got[0].Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED || got[0].Event.Seq != 1 {
			t.Fatalf("create %s: outcomes %v", c.MsgId, got)
		}
	}
	for _, c := range w.sends {
		got := outs.get(c.MsgId)
		if len(got) != 1 {
			t.Fatalf("send %s: %d outcomes, want exactly 1: %v", c.MsgId, len(got), got)
		}
		o, orig := got[0], w.original[c.MsgId]
		want := parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED
		if orig != c.MsgId {
			want = parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE
		}
		if o.Status != want || o.Event.GetMsgId() != orig || o.Event.GetSeq() != seqOf[orig] {
			t.Fatalf("send %s (original %s, seq %d): outcome %v", c.MsgId, orig, seqOf[orig], o)
		}
	}
	if n, want := outs.count(), w.commands(); n != want {
		t.Fatalf("%d outcomes for %d commands", n, want)
	}
}

// missingSeqs lists, as ranges, the seqs of want that got lacks.
func missingSeqs(got, want []*parleyv1.Event) string {
	have := make(map[int64]bool, len(got))
	for _, e := range got {
		have[e.Seq] = true
	}
	var out []string
	for i := 0; i < len(want); i++ {
		if have[want[i].Seq] {
			continue
		}
		j := i
		for j+1 < len(want) && !have[want[j+1].Seq] {
			j++
		}
		if j == i {
			out = append(out, strconv.FormatInt(want[i].Seq, 10))
		} else {
			out = append(out, fmt.Sprintf("%d–%d", want[i].Seq, want[j].Seq))
		}
		i = j
	}
	return strings.Join(out, ", ")
}

// checkStore verifies that the store holds exactly the log's timelines.
func checkStore(t *testing.T, st store.Store, byConv map[string][]*parleyv1.Event) {
	t.Helper()
	ctx := context.Background()
	for conv, evs := range byConv {
		var got []*parleyv1.Event
		after := int64(0)
		for {
			page, more, err := st.Events(ctx, conv, store.Range{After: after, Limit: store.MaxRangeLimit})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page...)
			if !more {
				break
			}
			after = page[len(page)-1].Seq
		}
		if len(got) != len(evs) {
			// The store reads up to the conversation's head: say which it
			// lacks, the events or the head.
			h, herr := st.Conversation(ctx, conv)
			t.Fatalf("store has %d events of %s, the log %d; its head: last seq %d (%v); seqs missing: %s",
				len(got), conv, len(evs), h.LastSeq, herr, missingSeqs(got, evs))
		}
		for i := range evs {
			if !proto.Equal(got[i], evs[i]) {
				t.Fatalf("store event %s/%d = %v, log has %v", conv, evs[i].Seq, got[i], evs[i])
			}
		}
		h, err := st.Conversation(ctx, conv)
		if err != nil || h.LastSeq != int64(len(evs)) {
			t.Fatalf("store head of %s = %+v, %v; want last seq %d", conv, h, err, len(evs))
		}
		ms, err := st.Members(ctx, conv)
		if err != nil || len(ms) != len(evs[0].Members) {
			t.Fatalf("store members of %s = %v, %v; want %v", conv, ms, err, evs[0].Members)
		}
	}
}
