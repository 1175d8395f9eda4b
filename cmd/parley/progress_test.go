package main

import (
	"testing"
	"time"

	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/writer"
)

func TestProgressLines(t *testing.T) {
	for _, c := range []struct {
		p    writer.RebuildProgress
		want string
	}{
		{writer.RebuildProgress{Total: 3000, Elapsed: 20 * time.Millisecond},
			"rebuild: 0 of 3000 records (0.0%), 0 events stored, 0s elapsed"},
		{writer.RebuildProgress{Read: 1200, Total: 3000, Stats: writer.RebuildStats{Events: 1000}, Elapsed: 2 * time.Second},
			"rebuild: 1200 of 3000 records (40.0%), 1000 events stored, 600 records/s, 2s elapsed"},
		{writer.RebuildProgress{Read: 500, Stats: writer.RebuildStats{Events: 400, Malformed: 2, OutOfSequence: 1}, Elapsed: 1500 * time.Millisecond},
			"rebuild: 500 records, 400 events stored, 3 skipped, 333 records/s, 1.5s elapsed"},
		{writer.RebuildProgress{Read: 3000, Total: 3000, Stats: writer.RebuildStats{Events: 2900}, Elapsed: 2980 * time.Millisecond, Done: true},
			"rebuild: done: 3000 of 3000 records (100.0%), 2900 events stored, 1007 records/s, 3s elapsed"},
	} {
		if got := rebuildProgressLine(c.p); got != c.want {
			t.Errorf("rebuildProgressLine(%+v) =\n%q, want\n%q", c.p, got, c.want)
		}
	}
	for _, c := range []struct {
		s    cassandrastore.MigrateStep
		want string
	}{
		{cassandrastore.MigrateStep{What: "connect to [c1]"}, "migrate: connect to [c1]"},
		{cassandrastore.MigrateStep{Migration: "0002_revoked.cql", Statement: 1, Statements: 2, What: "ALTER TABLE events ADD revoked boolean"},
			"migrate: 0002_revoked.cql (1/2): ALTER TABLE events ADD revoked boolean"},
		{cassandrastore.MigrateStep{Migration: "0002_revoked.cql", Statements: 2, What: "record it as applied in schema_migrations"},
			"migrate: 0002_revoked.cql: record it as applied in schema_migrations"},
	} {
		if got := migrateStepLine(c.s); got != c.want {
			t.Errorf("migrateStepLine(%+v) = %q, want %q", c.s, got, c.want)
		}
	}
}
