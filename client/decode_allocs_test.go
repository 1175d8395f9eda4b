//go:build !race

// Allocation counts are exact only without the race detector: the body's
// check takes its state from a sync.Pool, which the detector empties at
// random. scripts/test runs these tests in its pass without it.

package client

import "testing"

// TestDecodePushAllocs counts decodePush's allocations: the strings share
// one, the body has another.
func TestDecodePushAllocs(t *testing.T) {
	data := messagePush(nil)
	var f frame
	if n := testing.AllocsPerRun(100, func() { f = frame{}; decodePush(data, &f) }); n != 2 {
		t.Errorf("decodePush made %v allocations a push, want 2", n)
	}
}
