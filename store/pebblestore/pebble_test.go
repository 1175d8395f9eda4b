package pebblestore_test

import (
	"testing"

	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
