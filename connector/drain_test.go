package connector_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/store/pebblestore"
)

// TestGatewayDrain: on shutdown an open connection is closed with 4009
// within the drain window, and Run returns.
func TestGatewayDrain(t *testing.T) {
	e := newEnv(t)
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := e.commander("node-d", 10*time.Second, nil)
	g, err := connector.NewGateway(connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: secret, DrainWindow: 200 * time.Millisecond}, c, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	gwc := &gw{env: e, addr: g.Addr().String(), g: g}
	a, b := gwc.login(t, "alice", "1"), gwc.login(t, "bob", "1")
	start := time.Now()
	cancel()
	// The clients do not read (nor answer the close) until Run returned:
	// the drain must not wait for them.
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of the drain")
	}
	t.Logf("drained in %v", time.Since(start))
	for _, cl := range []*client{a, b} {
		if code := closeCode(t, cl.conn); code != connector.CloseDraining {
			t.Fatalf("closed with %d, want %d", code, connector.CloseDraining)
		}
	}
}
