package testutil

import (
	"testing"

	"github.com/parley-im/parley/store/pebblestore"
)

// Pebble opens an empty Pebble store in a temporary directory, closed when
// the test ends.
func Pebble(tb testing.TB) *pebblestore.Store {
	tb.Helper()
	st, err := pebblestore.Open(tb.TempDir(), pebblestore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}
