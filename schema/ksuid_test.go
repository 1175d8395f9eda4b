package schema

import (
	"testing"
	"time"

	"github.com/segmentio/ksuid"
)

// TestNewID: NewID makes valid, distinct KSUIDs stamped with the time.
func TestNewID(t *testing.T) {
	seen := make(map[string]bool)
	before := time.Now().Add(-time.Second)
	for range 10000 {
		s := NewID()
		id, err := ksuid.Parse(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if id.Time().Before(before) || id.Time().After(time.Now().Add(time.Second)) {
			t.Fatalf("%q stamped %v", s, id.Time())
		}
		if seen[s] {
			t.Fatalf("%q made twice", s)
		}
		seen[s] = true
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = NewID()
	}
}

func BenchmarkKSUIDNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ksuid.New().String()
	}
}
