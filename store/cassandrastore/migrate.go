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

// Migrate creates the keyspace (with the given replication map, in CQL
// syntax; "" means DefaultReplication) if it does not exist, and applies
// every migration of schema/cql that the keyspace has not recorded yet, in
// order. It is safe to run again: every statement is idempotent. Run it
// from one process at a time: concurrent CREATE TABLE of the same table on
// Cassandra before 5.0 can leave the nodes disagreeing on its id.
func Migrate(ctx context.Context, cfg Config, replication string) (applied []string, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if replication == "" {
		replication = DefaultReplication
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
	s, err := cl.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("cassandrastore: connect to %v: %w", cfg.Hosts, err)
	}
	err = s.Query(fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s", ks, replication)).ExecContext(ctx)
	s.Close()
	if err != nil {
		return nil, fmt.Errorf("cassandrastore: create keyspace %s: %w", ks, err)
	}
	// The migrations name their tables without a keyspace: run them in a
	// session bound to it.
	cl = cluster()
	cl.Keyspace = ks
	if s, err = cl.CreateSession(); err != nil {
		return nil, fmt.Errorf("cassandrastore: connect to keyspace %s: %w", ks, err)
	}
	defer s.Close()
	if err := s.Query("CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)").ExecContext(ctx); err != nil {
		return nil, fmt.Errorf("cassandrastore: create schema_migrations: %w", err)
	}
	done := make(map[int]bool)
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
		for _, st := range m.Statements {
			if err := s.Query(st).ExecContext(ctx); err != nil && !columnExists(st, err) {
				return applied, fmt.Errorf("cassandrastore: migration %s: %s: %w", m.Name, firstLine(st), err)
			}
		}
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
