package cassandrastore_test

import (
	"context"
	"testing"

	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
	"github.com/parley-im/parley/store/storetest"
)

func open(t *testing.T) *cassandrastore.Store {
	t.Helper()
	st, err := cassandrastore.Open(cstest.NewKeyspace(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func TestMigrateTwice(t *testing.T) {
	cfg := cstest.NewKeyspace(t)
	applied, err := cassandrastore.Migrate(context.Background(), cfg, "")
	if err != nil || len(applied) != 0 {
		t.Fatalf("second migration applied %v, %v; want nothing", applied, err)
	}
}

func TestPing(t *testing.T) {
	if err := open(t).Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}
