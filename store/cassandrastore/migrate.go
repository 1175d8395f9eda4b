package cassandrastore

import (
	"context"
	"fmt"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parley-im/parley/schema"
)

// DefaultReplication is the keyspace replication Migrate uses unless told
// otherwise: one copy, for a single node. A cluster wants e.g.
// {'class': 'NetworkTopologyStrategy', 'dc1': 3}.
const DefaultReplication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"

// MigrateOptions are Migrate's options beyond the keyspace's
// configuration.
type MigrateOptions struct {
	// Replication is the replication map of the keyspace, in CQL syntax,
	// if it is created; "" means DefaultReplication.
	Replication string
	// Progress, if not nil, is told of each step as it starts, on the
	// migrating goroutine. nil: no reports.
	Progress func(MigrateStep)
}

// MigrateStep is one step of Migrate, reported as it starts: a connection
// to make or a statement to run.
type MigrateStep struct {
	// Migration names the migration the step belongs to (its file in
	// schema/cql), or is "" for the steps before the migrations:
	// connecting, creating the keyspace and the table of applied
	// migrations, and reading it.
	Migration string
	// Statement is the statement's number in its migration, from 1, of
	// Statements. The step after a migration's statements, recording it as
	// applied, has Statement 0; outside a migration both are 0.
	Statement, Statements int
	// What is the statement's first line, or what the step does.
	What string
}

// Migrate creates the keyspace (with the given replication map, in CQL
// syntax; "" means DefaultReplication) if it does not exist, and applies
// every migration of schema/cql that the keyspace has not recorded yet, in
// order. It is safe to run again: every statement is idempotent. Run it
// from one process at a time: concurrent CREATE TABLE of the same table on
// Cassandra before 5.0 can leave the nodes disagreeing on its id.
func Migrate(ctx context.Context, cfg Config, replication string) (applied []string, err error) {
	return MigrateWith(ctx, cfg, MigrateOptions{Replication: replication})
}

// MigrateWith is Migrate with every option, progress reports among them.
func MigrateWith(ctx context.Context, cfg Config, o MigrateOptions) (applied []string, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	replication := o.Replication
	if replication == "" {
		replication = DefaultReplication
	}
	step := func(s MigrateStep) {
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	migrations, err := schema.CQLMigrations()
	if err != nil {
		return nil, err
	}
	// A driver configuration per session: sessions must not share a
	// host selection policy.
	cluster := func() *gocql.ClusterConfig {
		cl := cfg.cluster()
		// The migrations table is read and written at QUORUM: a majority
		// of replicas agrees on what was applied.
		cl.Consistency = gocql.Quorum
		cl.Timeout = max(cfg.Timeout, 30*time.Second)
		return cl
	}
	cl := cluster()
	ks := cfg.Keyspace
	step(MigrateStep{What: fmt.Sprintf("connect to %v", cfg.Hosts)})
	s, err := cl.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("cassandrastore: connect to %v: %w", cfg.Hosts, err)
	}
	createKS := fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s", ks, replication)
	step(MigrateStep{What: createKS})
	err = s.Query(createKS).ExecContext(ctx)
	s.Close()
	if err != nil {
		return nil, fmt.Errorf("cassandrastore: create keyspace %s: %w", ks, err)
	}
	// The migrations name their tables without a keyspace: run them in a
	// session bound to it.
	cl = cluster()
	cl.Keyspace = ks
	step(MigrateStep{What: "connect to keyspace " + ks})
	if s, err = cl.CreateSession(); err != nil {
		return nil, fmt.Errorf("cassandrastore: connect to keyspace %s: %w", ks, err)
	}
	defer s.Close()
	const createTable = "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)"
	step(MigrateStep{What: createTable})
	if err := s.Query(createTable).ExecContext(ctx); err != nil {
		return nil, fmt.Errorf("cassandrastore: create schema_migrations: %w", err)
	}
	done := make(map[int]bool)
	step(MigrateStep{What: "read the applied migrations from schema_migrations"})
	it := s.Query("SELECT version FROM schema_migrations").IterContext(ctx)
	var v int
	for it.Scan(&v) {
		done[v] = true
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("cassandrastore: read schema_migrations: %w", err)
	}
	for _, m := range migrations {
		if done[m.Version] {
			continue
		}
		n := len(m.Statements)
		for i, st := range m.Statements {
			step(MigrateStep{Migration: m.Name, Statement: i + 1, Statements: n, What: firstLine(st)})
			if err := s.Query(st).ExecContext(ctx); err != nil && !columnExists(st, err) {
				return applied, fmt.Errorf("cassandrastore: migration %s: %s: %w", m.Name, firstLine(st), err)
			}
		}
		step(MigrateStep{Migration: m.Name, Statements: n, What: "record it as applied in schema_migrations"})
		if err := s.Query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.Version, m.Name, time.Now()).ExecContext(ctx); err != nil {
			return applied, fmt.Errorf("cassandrastore: record migration %s: %w", m.Name, err)
		}
		applied = append(applied, m.Name)
	}
	return applied, nil
}

// columnExists reports whether err says that the column an ALTER TABLE ...
// ADD adds exists already: a migration interrupted after the statement and
// run again (CQL has no ADD IF NOT EXISTS before Cassandra 5).
func columnExists(stmt string, err error) bool {
	if !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(stmt)), "ALTER TABLE") {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "conflicts with an existing column") || strings.Contains(msg, "already exist")
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

// DropKeyspace drops cfg's keyspace and everything in it.
func DropKeyspace(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	s, err := cfg.cluster().CreateSession()
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Query("DROP KEYSPACE IF EXISTS " + cfg.Keyspace).ExecContext(ctx)
}
