//go:build !race

// Allocation counts are exact only without the race detector: KeyPartition
// takes its record from a sync.Pool, which the detector empties at random.
// scripts/test runs these tests in its pass without it.

package kafka_test

import (
	"testing"

	"github.com/parley-im/parley/kafka"
)

// TestKeyPartitionAllocs: KeyPartition allocates nothing.
func TestKeyPartitionAllocs(t *testing.T) {
	key := []byte("conversation-1")
	if n := testing.AllocsPerRun(1000, func() { kafka.KeyPartition(key, 8) }); n != 0 {
		t.Errorf("KeyPartition allocates %v times a call, want 0", n)
	}
}
