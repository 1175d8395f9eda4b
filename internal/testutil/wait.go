// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"testing"
	"time"
)

// WaitFor checks cond every 10 ms until it holds, and fails tb if it does
// not within timeout: tests wait for a condition, never for a fixed time.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}
