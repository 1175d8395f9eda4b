package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/schema"
)

// TestSkipped: roles share a registry, each under its role label; two
// instances of one role share the counter; every series starts at zero.
func TestSkipped(t *testing.T) {
	reg := prometheus.NewRegistry()
	w1, err := NewSkipped(reg, "writer", "parley.events")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := NewSkipped(reg, "writer", "parley.events")
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewSkipped(reg, "fanout", "parley.events", "parley.presence")
	if err != nil {
		t.Fatal(err)
	}
	w1.Add("parley.events", "malformed")
	w2.Add("parley.events", "malformed")
	f.Add("parley.presence", "undecodable")
	if n := w1.Count("parley.events", "malformed"); n != 2 {
		t.Fatalf("writer malformed %d, want 2", n)
	}
	if n := f.Count("parley.events", "malformed"); n != 0 {
		t.Fatalf("fanout malformed %d, want 0", n)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, fam := range fams {
		if fam.GetName() == "parley_records_skipped_total" {
			series += len(fam.GetMetric())
		}
	}
	// writer: 1 topic, fanout: 2 topics; every reason for each.
	if want := 3 * len(schema.SkipReasons); series != want {
		t.Fatalf("%d series, want %d", series, want)
	}
	if _, err := NewSkipped(nil, "sequencer"); err != nil {
		t.Fatal(err)
	}
}
