// Package cstest gives tests a real Cassandra: the one scripts/test starts
// and names in PARLEY_TEST_CASSANDRA (host:port).
package cstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/store/cassandrastore"
)

// EnvAddr names the Cassandra the tests use, host:port.
const EnvAddr = "PARLEY_TEST_CASSANDRA"

// EnvRequired, when set, turns a missing Cassandra into a failure: the
// README's test command sets it, so that it never skips these tests.
const EnvRequired = "PARLEY_REQUIRE_CASSANDRA"

var keyspaces atomic.Int64

// Addr returns the test Cassandra's host and port, skipping the test when
// there is none (plain `go test`), or failing it when one is required.
func Addr(t testing.TB) (string, int) {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		if os.Getenv(EnvRequired) != "" {
			t.Fatalf("%s is not set but %s is: the test script failed to start Cassandra", EnvAddr, EnvRequired)
		}
		t.Skipf("no Cassandra: %s is not set (./scripts/test starts one and sets it)", EnvAddr)
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s=%q: %v", EnvAddr, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s=%q: bad port", EnvAddr, addr)
	}
	return host, port
}

// NewKeyspace returns a configuration for a fresh, migrated keyspace of the
// test Cassandra; the keyspace is dropped when the test ends.
func NewKeyspace(t testing.TB) cassandrastore.Config {
	t.Helper()
	host, port := Addr(t)
	cfg := cassandrastore.Config{
		Hosts:    []string{host},
		Port:     port,
		Keyspace: fmt.Sprintf("t%d_%d", time.Now().UnixNano()%1e9, keyspaces.Add(1)),
		// One node: LOCAL_QUORUM is ONE. Timeouts are generous for a
		// small-heap node on a busy 2-core machine.
		Timeout: 20 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cassandrastore.Migrate(ctx, cfg, ""); err != nil {
		t.Fatalf("migrate %s: %v", cfg.Keyspace, err)
	}
	t.Cleanup(func() {
		if err := cassandrastore.DropKeyspace(context.Background(), cfg); err != nil {
			t.Logf("drop keyspace %s: %v", cfg.Keyspace, err)
		}
	})
	return cfg
}
