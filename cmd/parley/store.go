package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/pebblestore"
)

// storeOptions are the flags that choose and reach the timeline store.
type storeOptions struct {
	kind        *string
	dir         *string
	cassandra   *string
	keyspace    *string
	consistency *string
	localDC     *string
	migrate     *bool
	replication *string
}

// storeFlags adds the store flags; defaultDir is the Pebble directory.
func storeFlags(fs *flag.FlagSet, defaultDir string, migrateByDefault bool) *storeOptions {
	return &storeOptions{
		kind:        fs.String("store", "", "timeline store: pebble (embedded) or cassandra (default: cassandra if --cassandra is set, else pebble)"),
		dir:         fs.String("store-dir", defaultDir, "directory of the embedded (Pebble) store"),
		cassandra:   fs.String("cassandra", "", "comma-separated Cassandra contact points, host or host:port"),
		keyspace:    fs.String("keyspace", "parley", "Cassandra keyspace"),
		consistency: fs.String("consistency", "LOCAL_QUORUM", "Cassandra consistency for reads and writes"),
		localDC:     fs.String("local-dc", "", "Cassandra datacenter to keep requests in"),
		migrate:     fs.Bool("migrate", migrateByDefault, "apply the Cassandra schema migrations at start (like parley migrate)"),
		replication: fs.String("replication", cassandrastore.DefaultReplication, "replication map of the keyspace, if --migrate creates it"),
	}
}

func (o *storeOptions) isCassandra() (bool, error) {
	switch *o.kind {
	case "":
		return *o.cassandra != "", nil
	case "pebble":
		return false, nil
	case "cassandra":
		if *o.cassandra == "" {
			return false, fmt.Errorf("--store cassandra needs --cassandra")
		}
		return true, nil
	}
	return false, fmt.Errorf("--store must be pebble or cassandra, not %q", *o.kind)
}

func (o *storeOptions) cassandraConfig(log *slog.Logger) (cassandrastore.Config, error) {
	var hosts []string
	for _, h := range strings.Split(*o.cassandra, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	cons, err := gocql.ParseConsistencyWrapper(*o.consistency)
	if err != nil {
		return cassandrastore.Config{}, fmt.Errorf("--consistency: %w", err)
	}
	return cassandrastore.Config{Hosts: hosts, Keyspace: *o.keyspace, Consistency: cons, LocalDC: *o.localDC, Logger: log}, nil
}

// open opens the chosen store. A Cassandra store is migrated first if
// --migrate is set.
func (o *storeOptions) open(ctx context.Context, log *slog.Logger, pebbleOpts pebblestore.Options) (store.Store, error) {
	isC, err := o.isCassandra()
	if err != nil {
		return nil, err
	}
	if !isC {
		return pebblestore.Open(*o.dir, pebbleOpts)
	}
	cfg, err := o.cassandraConfig(log)
	if err != nil {
		return nil, err
	}
	if *o.migrate {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		applied, err := cassandrastore.MigrateWith(mctx, cfg, cassandrastore.MigrateOptions{Replication: *o.replication, Progress: func(s cassandrastore.MigrateStep) {
			log.Info("cassandra migration", "step", strings.TrimPrefix(migrateStepLine(s), "migrate: "))
		}})
		cancel()
		if err != nil {
			return nil, err
		}
		if len(applied) > 0 {
			log.Info("applied Cassandra migrations", "keyspace", cfg.Keyspace, "migrations", applied)
		}
	}
	return cassandrastore.Open(cfg)
}

// describe says which store the options name, for logs.
func (o *storeOptions) describe() string {
	if isC, _ := o.isCassandra(); isC {
		return fmt.Sprintf("cassandra %s keyspace %s", *o.cassandra, *o.keyspace)
	}
	return "pebble " + *o.dir
}
