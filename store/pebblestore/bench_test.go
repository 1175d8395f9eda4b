package pebblestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// Benchmarks of the store's two hot calls: the writer's Append of a batch
// of events, and the history read of a page of one conversation. Run with
// go test -run '^$' -bench . -benchmem ./store/pebblestore.

// benchBody is a chat message body of about 100 bytes.
var benchBody = []byte(`{"text":"Are we still on for the design review at 3pm? I moved it to room 4B.","mentions":["bob"]}`)

func benchConv(i int) string { return fmt.Sprintf("2lKGCVZf5PqQ8bW0ZKUV%07d", i) }

func benchCreated(conv string, members int) *parleyv1.Event {
	ev := &parleyv1.Event{Conv: conv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8",
		From: "user-000000", Ts: 1_760_000_000_000, ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "design review"}
	for i := range members {
		ev.Members = append(ev.Members, fmt.Sprintf("user-%06d", i))
	}
	return ev
}

// benchMessage is message seq of conv, from one of its 10 first members.
func benchMessage(conv string, seq int64) *parleyv1.Event {
	return &parleyv1.Event{Conv: conv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
		MsgId: fmt.Sprintf("2lKGHwTLl1m0cRCv%011d", seq), Cmid: fmt.Sprintf("5f0c6f43-3e4b-4a43-9a1e-%012d", seq),
		From: fmt.Sprintf("user-%06d", seq%10), Ts: 1_760_000_000_000 + seq, Kind: "text", Body: benchBody}
}

// BenchmarkAppend appends batches of 100 message events, 10 to each of 10
// conversations, as the writer does: "sync" with the writer's options (the
// batch is on disk when Append returns), "nosync" with rebuild's.
func BenchmarkAppend(b *testing.B) {
	const convs, perConv = 10, 10
	for _, o := range []struct {
		name string
		opts Options
	}{{"sync", Options{}}, {"nosync", Options{NoSync: true}}} {
		b.Run(o.name, func(b *testing.B) {
			ctx := context.Background()
			s := openBench(b, o.opts)
			var created []*parleyv1.Event
			for c := range convs {
				created = append(created, benchCreated(benchConv(c), 100))
			}
			if err := s.Append(ctx, created); err != nil {
				b.Fatal(err)
			}
			// One batch, moved on by perConv seqs each time.
			var batch []*parleyv1.Event
			for c := range convs {
				for i := range perConv {
					batch = append(batch, benchMessage(benchConv(c), int64(2+i)-perConv))
				}
			}
			seq := int64(1)
			b.ReportAllocs()
			for b.Loop() {
				for _, ev := range batch {
					ev.Seq += perConv
					ev.Ts += perConv
				}
				if err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
				seq += perConv
			}
			h, err := s.Conversation(ctx, benchConv(convs-1))
			if err != nil || h.LastSeq != seq {
				b.Fatalf("head %+v (%v), want last seq %d", h, err, seq)
			}
			evs, _, err := s.Events(ctx, benchConv(convs-1), store.Range{Before: seq + 1, Limit: 1})
			if err != nil || len(evs) != 1 || evs[0].Seq != seq || string(evs[0].Body) != string(benchBody) {
				b.Fatalf("last event %v (%v)", evs, err)
			}
		})
	}
}

// BenchmarkAppendSustained appends batches as the writer does under dm
// load: 4,000 message events, four to each of 1,000 direct conversations
// in random order, with the writer's options, for long enough that
// memtables are flushed and tables compacted. Those run on Pebble's own
// goroutines, outside the time a batch takes, so it also reports the
// process's CPU time an event (cpu-ns/event), taken once the compactions
// in progress have finished: with -benchtime 600x (2.4 million events) it
// is the figure to compare store options by.
func BenchmarkAppendSustained(b *testing.B) {
	const convs, perConv = 1000, 4
	ctx := context.Background()
	s := openBench(b, Options{})
	conv := func(c int) string { return schema.DirectConvID(fmt.Sprint("alice", c), fmt.Sprint("bob", c)) }
	var batch []*parleyv1.Event
	for c := range convs {
		if err := s.Append(ctx, []*parleyv1.Event{benchCreated(conv(c), 2)}); err != nil {
			b.Fatal(err)
		}
		for i := range perConv {
			batch = append(batch, benchMessage(conv(c), int64(2+i)-perConv))
		}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		for _, ev := range batch {
			ev.Seq += perConv
			ev.Ts += perConv
		}
		if err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for s.db.Metrics().Compact.NumInProgress > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N*len(batch)), "cpu-ns/event")
	if h, err := s.Conversation(ctx, conv(0)); err != nil || h.LastSeq != int64(1+b.N*perConv) {
		b.Fatalf("head %+v (%v), want last seq %d", h, err, 1+b.N*perConv)
	}
}

// openBench opens an empty store for benchmark b, closed when it ends.
func openBench(b *testing.B, o Options) *Store {
	s, err := Open(b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// cpuTime is the CPU time the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEvents reads a history page of 50 events from the middle of a
// conversation of 10,000 events (flushed to a table, as older history is),
// forward (after) and backward (before).
func BenchmarkEvents(b *testing.B) {
	const total, page = 10_000, 50
	ctx := context.Background()
	s := openBench(b, Options{})
	conv := benchConv(0)
	batch := []*parleyv1.Event{benchCreated(conv, 100)}
	for seq := int64(2); seq <= total; seq++ {
		batch = append(batch, benchMessage(conv, seq))
		if len(batch) == 1000 || seq == total {
			if err := s.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	for _, r := range []struct {
		name  string
		r     store.Range
		first int64
	}{
		{"after", store.Range{After: total / 2, Limit: page}, total/2 + 1},
		{"before", store.Range{Before: total / 2, Limit: page}, total/2 - page},
	} {
		b.Run(r.name, func(b *testing.B) {
			var evs []*parleyv1.Event
			var more bool
			var err error
			b.ReportAllocs()
			for b.Loop() {
				if evs, more, err = s.Events(ctx, conv, r.r); err != nil {
					b.Fatal(err)
				}
			}
			if len(evs) != page || !more || evs[0].Seq != r.first || evs[page-1].Seq != r.first+page-1 || string(evs[0].Body) != string(benchBody) {
				b.Fatalf("got %d events from seq %d (more %v), want %d from %d", len(evs), evs[0].Seq, more, page, r.first)
			}
		})
	}
}
