// Package allinonetest runs an all-in-one node for a test.
package allinonetest

import (
	"context"
	"testing"

	"github.com/parley-im/parley/allinone"
)

// Run starts a node with cfg and runs it until the test ends; the test
// fails if the node cannot start or Run returns an error.
func Run(t testing.TB, cfg allinone.Config) *allinone.Node {
	t.Helper()
	n, err := allinone.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("all-in-one node: %v", err)
		}
	})
	return n
}
