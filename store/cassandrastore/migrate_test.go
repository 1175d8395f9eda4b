package cassandrastore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/schema"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
)

// TestMigrateProgress migrates a new keyspace of the real Cassandra and
// checks that every step is reported as it starts, in order: connecting,
// the keyspace, the migrations table, then each statement of each
// migration and its record; and that a second run reports no migration.
func TestMigrateProgress(t *testing.T) {
	host, port := cstest.Addr(t)
	cfg := cassandrastore.Config{Hosts: []string{host}, Port: port, Timeout: 20 * time.Second,
		Keyspace: fmt.Sprintf("progress_%d", time.Now().UnixNano()%1e9)}
	t.Cleanup(func() {
		if err := cassandrastore.DropKeyspace(context.Background(), cfg); err != nil {
			t.Logf("drop keyspace %s: %v", cfg.Keyspace, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	migrate := func() ([]string, []cassandrastore.MigrateStep) {
		var steps []cassandrastore.MigrateStep
		applied, err := cassandrastore.MigrateWith(ctx, cfg, cassandrastore.MigrateOptions{
			Progress: func(s cassandrastore.MigrateStep) { steps = append(steps, s) },
		})
		if err != nil {
			t.Fatal(err)
		}
		return applied, steps
	}
	migrations, err := schema.CQLMigrations()
	if err != nil {
		t.Fatal(err)
	}
	before := []string{
		"connect to [" + host + "]",
		"CREATE KEYSPACE IF NOT EXISTS " + cfg.Keyspace + " WITH replication = " + cassandrastore.DefaultReplication,
		"connect to keyspace " + cfg.Keyspace,
		"CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)",
		"read the applied migrations from schema_migrations",
	}
	want := make([]cassandrastore.MigrateStep, 0)
	for _, w := range before {
		want = append(want, cassandrastore.MigrateStep{What: w})
	}
	var names []string
	for _, m := range migrations {
		names = append(names, m.Name)
		for i, st := range m.Statements {
			first, _, _ := strings.Cut(st, "\n")
			want = append(want, cassandrastore.MigrateStep{Migration: m.Name, Statement: i + 1, Statements: len(m.Statements), What: first})
		}
		want = append(want, cassandrastore.MigrateStep{Migration: m.Name, Statements: len(m.Statements), What: "record it as applied in schema_migrations"})
	}

	applied, steps := migrate()
	if !slices.Equal(applied, names) {
		t.Errorf("applied %v, want %v", applied, names)
	}
	if !slices.Equal(steps, want) {
		t.Errorf("steps reported:\n%s\nwant:\n%s", fmtSteps(steps), fmtSteps(want))
	}

	applied, steps = migrate()
	if len(applied) != 0 || !slices.Equal(steps, want[:len(before)]) {
		t.Errorf("a second run applied %v with steps:\n%s\nwant nothing, with:\n%s", applied, fmtSteps(steps), fmtSteps(want[:len(before)]))
	}
}

func fmtSteps(steps []cassandrastore.MigrateStep) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "  %+v\n", s)
	}
	return b.String()
}
