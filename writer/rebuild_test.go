package writer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

const (
	rbConvs  = 3
	rbEvents = 200 // per conversation
	rbTxn    = 20  // events per transaction
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func rbEvent(conv string, seq int64) *parleyv1.Event {
	ev := &parleyv1.Event{Conv: conv, Seq: seq, MsgId: fmt.Sprintf("m-%s-%d", conv, seq), From: "alice", Ts: 1_700_000_000_000 + seq}
	if seq == 1 {
		ev.Type, ev.ConvKind, ev.Members = parleyv1.EventType_EVENT_TYPE_CREATED, parleyv1.ConvKind_CONV_KIND_GROUP, []string{"alice", "bob"}
	} else {
		ev.Type, ev.Kind, ev.Body = parleyv1.EventType_EVENT_TYPE_MESSAGE, "text", []byte(fmt.Sprintf(`{"n":%d}`, seq))
	}
	return ev
}

// seedEvents starts an embedded broker on loopback and writes rbConvs
// conversations of rbEvents events each to its events topic, as the
// sequencer does: keyed by conversation, in committed transactions.
func seedEvents(t *testing.T) (kafka.Config, []string) {
	t.Helper()
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kc := kafka.Config{Brokers: []string{b.Addr()}, Partitions: 4, Logger: quiet()}.WithDefaults()
	cl, err := kgo.NewClient(kc.ClientOpts(kgo.TransactionalID("rebuild-test"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, kc); err != nil {
		t.Fatal(err)
	}
	convs := make([]string, rbConvs)
	for i := range convs {
		convs[i] = fmt.Sprintf("conv-%d", i)
	}
	for seq := int64(1); seq <= rbEvents; seq += rbTxn {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, conv := range convs {
			for s := seq; s < seq+rbTxn; s++ {
				v, err := proto.Marshal(rbEvent(conv, s))
				if err != nil {
					t.Fatal(err)
				}
				cl.Produce(ctx, &kgo.Record{Topic: kc.Topics().Events, Key: []byte(conv), Value: v}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Error(err)
					}
				})
			}
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	return kc, convs
}

// offsetSpan is the number of offsets of the events topic: records and
// transaction markers.
func offsetSpan(t *testing.T, kc kafka.Config) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kc.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), kc.Topics().Events)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func openPebble(t *testing.T) *pebblestore.Store {
	t.Helper()
	st, err := pebblestore.Open(filepath.Join(t.TempDir(), "store"), pebblestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestRebuildProgress rebuilds a real events topic into Pebble and checks
// the progress reports: the size of the topic first, then counts that only
// grow and stay within it, no closer together than the interval, and a
// last report that says done with every record read and every event
// stored.
func TestRebuildProgress(t *testing.T) {
	kc, convs := seedEvents(t)
	span := offsetSpan(t, kc)
	const events = rbConvs * rbEvents
	// Each transaction ends in a marker on each partition it wrote.
	if span < events+events/rbTxn/rbConvs || span > 2*events {
		t.Fatalf("the topic spans %d offsets for %d events", span, events)
	}

	check := func(t *testing.T, interval time.Duration, batch int) []writer.RebuildProgress {
		t.Helper()
		var reports []writer.RebuildProgress
		st := openPebble(t)
		began := time.Now()
		stats, err := writer.RebuildWith(context.Background(), writer.RebuildConfig{
			Kafka: kc, Batch: batch, Logger: quiet(), ProgressInterval: interval,
			Progress: func(p writer.RebuildProgress) { reports = append(reports, p) },
		}, st)
		took := time.Since(began)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Events != events || stats.Undecodable+stats.Malformed+stats.OutOfSequence != 0 {
			t.Fatalf("rebuild stats %+v, want %d events and nothing skipped", stats, events)
		}
		for _, conv := range convs {
			got, _, err := st.Events(context.Background(), conv, store.Range{Limit: 1000})
			if err != nil || len(got) != rbEvents {
				t.Fatalf("the rebuilt store has %d events of %s (%v), want %d", len(got), conv, err, rbEvents)
			}
		}

		if len(reports) < 2 {
			t.Fatalf("%d progress reports, want a first and a last at least", len(reports))
		}
		first, last := reports[0], reports[len(reports)-1]
		if first.Read != 0 || first.Total != span || first.Done || first.Stats.Events != 0 {
			t.Errorf("first report %+v, want nothing read of %d", first, span)
		}
		if !last.Done || last.Read != span || last.Total != span || last.Stats != stats || last.Elapsed > took {
			t.Errorf("last report %+v, want done with %d of %d read and stats %+v, within %v", last, span, span, stats, took)
		}
		want := interval
		if want <= 0 {
			want = time.Second // the default
		}
		for i, p := range reports[1:] {
			prev := reports[i]
			if p.Read < prev.Read || p.Stats.Events < prev.Stats.Events || p.Elapsed < prev.Elapsed || p.Read > p.Total || prev.Done {
				t.Errorf("report %d %+v after %+v", i+1, p, prev)
			}
			if !p.Done && p.Elapsed-prev.Elapsed < want {
				t.Errorf("reports %d and %d came %v apart, under the interval", i, i+1, p.Elapsed-prev.Elapsed)
			}
		}
		return reports
	}

	t.Run("every chance", func(t *testing.T) {
		reports := check(t, time.Nanosecond, 50)
		// A report may come every 256 records: some come between the
		// first and the last.
		if len(reports) < 3 {
			t.Errorf("%d reports with a 1ns interval over %d records, want some between the first and the last", len(reports), span)
		}
		mid := reports[len(reports)/2]
		if mid.Read == 0 || mid.Read >= span {
			t.Errorf("a report in the middle read %d of %d", mid.Read, span)
		}
	})
	t.Run("default interval", func(t *testing.T) {
		reports := check(t, 0, 0)
		if n, most := len(reports), 2+int(reports[len(reports)-1].Elapsed/time.Second); n > most {
			t.Errorf("%d reports in %v: more than one a second", n, reports[len(reports)-1].Elapsed)
		}
	})
	t.Run("no callback", func(t *testing.T) {
		stats, err := writer.Rebuild(context.Background(), kc, openPebble(t), 0, quiet())
		if err != nil || stats.Events != events {
			t.Fatalf("Rebuild without progress: %+v, %v", stats, err)
		}
	})
}
