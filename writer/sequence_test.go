package writer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

func event(conv string, seq int64) *parleyv1.Event {
	ev := &parleyv1.Event{Conv: conv, Seq: seq, MsgId: fmt.Sprintf("m-%s-%d", conv, seq), From: "alice", Ts: seq}
	if seq == 1 {
		ev.Type, ev.ConvKind, ev.Members = parleyv1.EventType_EVENT_TYPE_CREATED, parleyv1.ConvKind_CONV_KIND_GROUP, []string{"alice", "bob"}
	} else {
		ev.Type, ev.Kind, ev.Body = parleyv1.EventType_EVENT_TYPE_MESSAGE, "text", []byte(fmt.Sprint(seq))
	}
	return ev
}

func record(partition int32, offset int64, ev *parleyv1.Event) *kgo.Record {
	v, err := proto.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: "parley.events", Partition: partition, Offset: offset, Key: []byte(ev.Conv), Value: v}
}

// TestTakeEvents runs the writer's filter over batches of records, storing
// what it takes in a real Pebble store: well-formed events that continue
// their conversation are taken (replays after a rebalance included); the
// rest is skipped with its reason, logged, and counted.
func TestTakeEvents(t *testing.T) {
	ctx := context.Background()
	st := testutil.Pebble(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	skipped := map[string]int{}
	seq := newSequence(4)
	take := func(recs ...*kgo.Record) []int64 {
		t.Helper()
		evs := takeEvents(recs, seq, log, func(r string) { skipped[r]++ })
		if err := st.Append(ctx, evs); err != nil {
			t.Fatal(err)
		}
		seq.trim()
		var seqs []int64
		for _, ev := range evs {
			seqs = append(seqs, ev.Seq)
		}
		return seqs
	}
	want := func(got []int64, w ...int64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("took seqs %v, want %v", got, w)
		}
	}
	// A conversation from its start, with a jump, a repeat and garbage in
	// the middle.
	a := "conv-a"
	forged := event(a, 1<<40)
	seqZero := event(a, 3)
	seqZero.Seq = 0
	want(take(record(0, 0, event(a, 1)), record(0, 1, event(a, 2)), record(0, 2, forged), record(0, 3, event(a, 2)),
		&kgo.Record{Partition: 0, Offset: 4, Key: []byte(a), Value: []byte("\xff garbage")}, record(0, 5, seqZero),
		record(0, 6, event(a, 3))), 1, 2, 3)
	if skipped[schema.SkipOutOfSequence] != 2 || skipped[schema.SkipUndecodable] != 1 || skipped[schema.SkipMalformed] != 1 {
		t.Fatalf("skipped %v", skipped)
	}
	for _, s := range []string{"reason=out_of_sequence", "reason=undecodable", "reason=malformed", "jumps past its last seq 2", "was taken already"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("the log lacks %q:\n%s", s, logs.String())
		}
	}
	// The first event met of a conversation is taken as it is: the writer
	// skips nothing on the store's word (see sequence).
	want(take(record(1, 0, event("conv-b", 5)), record(1, 1, event("conv-b", 6))), 5, 6)
	// After a rebalance, the partition is read again from an earlier
	// offset: replays of stored events are taken, then the log goes on.
	seq.forget([]int32{0})
	want(take(record(0, 1, event(a, 2)), record(0, 6, event(a, 3)), record(0, 7, event(a, 4))), 2, 3, 4)
	want(take(record(0, 8, event(a, 6))))
	// Beyond the bound, conversations are forgotten and met afresh.
	for i := range 6 {
		c := fmt.Sprint("conv-", i)
		want(take(record(2, int64(i), event(c, 1))), 1)
	}
	if len(seq.convs) > 4 {
		t.Fatalf("%d conversations tracked, bound 4", len(seq.convs))
	}
	want(take(record(0, 9, event(a, 5)), record(0, 10, event(a, 7))), 5)
}

// TestTakeEventsKeepsNoRecordMemory: the events decoded from a batch share
// their records' memory (schema.DecodeSharedEvent), so what the writer
// keeps of them must be copies. After a batch is stored, its records are
// overwritten: the store still holds the events as they were, and the
// conversations' last seqs are still found by their ids (a tracked id
// sharing the record would now read as garbage, the conversation would be
// met afresh and the jump below taken).
func TestTakeEventsKeepsNoRecordMemory(t *testing.T) {
	ctx := context.Background()
	st := testutil.Pebble(t)
	log := slog.New(slog.DiscardHandler)
	seq := newSequence(100)
	convs := []string{"conv-a", "conv-b"}
	var recs []*kgo.Record
	for s := int64(1); s <= 3; s++ {
		for _, c := range convs {
			ev := event(c, s)
			ev.Cmid = fmt.Sprintf("cmid-%s-%d", c, s)
			recs = append(recs, record(0, int64(len(recs)), ev))
		}
	}
	evs := takeEvents(recs, seq, log, func(r string) { t.Fatalf("skipped: %s", r) })
	if len(evs) != len(recs) {
		t.Fatalf("took %d events of %d", len(evs), len(recs))
	}
	if err := st.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		for i := range r.Value {
			r.Value[i] = 'x'
		}
		for i := range r.Key {
			r.Key[i] = 'x'
		}
	}
	for _, c := range convs {
		if _, ok := seq.convs[c]; !ok {
			t.Fatalf("%s is not tracked: tracked %v", c, seq.convs)
		}
		got, _, err := st.Events(ctx, c, store.Range{After: 0, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range got {
			want := event(c, int64(i+1))
			want.Cmid = fmt.Sprintf("cmid-%s-%d", c, i+1)
			if !proto.Equal(ev, want) {
				t.Fatalf("stored %v, want %v", ev, want)
			}
		}
		if len(got) != 3 {
			t.Fatalf("%s: %d events stored", c, len(got))
		}
	}
	skipped := 0
	evs = takeEvents([]*kgo.Record{record(0, 6, event("conv-a", 5)), record(0, 7, event("conv-b", 4))}, seq, log, func(string) { skipped++ })
	if skipped != 1 || len(evs) != 1 || evs[0].Conv != "conv-b" || evs[0].Seq != 4 {
		t.Fatalf("after the overwrite: took %v, skipped %d; want conv-b's seq 4 only", evs, skipped)
	}
}
