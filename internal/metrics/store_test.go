package metrics

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/pebblestore"
)

// TestInstrumentStore: every call is timed under its op; a failure counts
// as an error, "not found" does not; two roles of a process share the
// metrics under their own role label.
func TestInstrumentStore(t *testing.T) {
	reg := prometheus.NewRegistry()
	pb, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	st, err := InstrumentStore(reg, "writer", failingEvents{pb})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InstrumentStore(reg, "connector", pb); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(interface{ Ping(context.Context) error }); ok {
		t.Error("the measured store has a Ping its store lacks")
	}
	ctx := context.Background()
	if _, err := st.Conversation(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown conversation: %v", err)
	}
	if err := st.Append(ctx, []*parleyv1.Event{{Conv: "c1", Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, From: "alice", Members: []string{"alice"}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Events(ctx, "c1", store.Range{Limit: 10}); err == nil {
		t.Fatal("the failing store answered")
	}
	want := map[string][2]uint64{ // op -> calls, errors
		"conversation": {1, 0}, "append": {1, 0}, "events": {1, 1}, "members": {0, 0},
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]uint64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if label(m, "role") != "writer" {
				continue
			}
			op := label(m, "op")
			v := got[op]
			switch f.GetName() {
			case "parley_store_seconds":
				v[0] = m.GetHistogram().GetSampleCount()
			case "parley_store_errors_total":
				v[1] = uint64(m.GetCounter().GetValue())
			}
			got[op] = v
		}
	}
	for op, w := range want {
		if got[op] != w {
			t.Errorf("%s: %v calls and errors, want %v", op, got[op], w)
		}
	}
	if len(got) != len(storeOps) {
		t.Errorf("%d ops of the writer have series, want all %d", len(got), len(storeOps))
	}
}

// failingEvents is a store whose Events fails.
type failingEvents struct{ store.Store }

func (failingEvents) Events(context.Context, string, store.Range) ([]*parleyv1.Event, bool, error) {
	return nil, false, errors.New("the disk is gone")
}

// pinger is a store with a Ping, to check the measured store keeps it.
type pinger struct {
	store.Store
	pinged bool
}

func (p *pinger) Ping(context.Context) error { p.pinged = true; return nil }

func TestInstrumentStoreKeepsPing(t *testing.T) {
	p := &pinger{}
	st, err := InstrumentStore(nil, "fanout", p)
	if err != nil {
		t.Fatal(err)
	}
	pi, ok := st.(interface{ Ping(context.Context) error })
	if !ok {
		t.Fatal("the measured store lost its Ping")
	}
	if err := pi.Ping(context.Background()); err != nil || !p.pinged {
		t.Fatalf("Ping: %v, reached the store: %v", err, p.pinged)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
