package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
)

// BenchmarkSync measures sync over a real WebSocket for a user in 1,000
// and 10,000 conversations, each with 5 unread messages, on Pebble and on
// the real Cassandra (which needs PARLEY_TEST_CASSANDRA):
//
//	go test ./e2e -run '^$' -bench Sync -benchtime 1x
func BenchmarkSync(b *testing.B) {
	for _, kind := range []string{"pebble", "cassandra"} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) {
				var st store.Store
				if kind == "pebble" {
					st = openStore(b, b.TempDir())
				} else {
					st = openCassandra(b, cstest.NewKeyspace(b))
				}
				b.Cleanup(func() { st.Close() })
				benchSync(b, st, n)
			})
		}
	}
}

func benchSync(b *testing.B, st store.Store, n int) {
	ctx := context.Background()
	// n conversations of u, each created by another user who then sent 5
	// messages; written straight to the store in batches.
	var batch []*parleyv1.Event
	flush := func() {
		if err := st.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range n {
		conv := fmt.Sprintf("c%06d", i)
		batch = append(batch, &parleyv1.Event{Conv: conv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: conv, From: "o",
			Ts: 1, ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "room " + conv, Members: []string{"o", "u"}})
		for s := int64(2); s <= 6; s++ {
			batch = append(batch, &parleyv1.Event{Conv: conv, Seq: s, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: fmt.Sprint(conv, s),
				From: "o", Ts: s, Kind: "text", Body: []byte(`"hello"`)})
		}
		if len(batch) >= 6000 {
			flush()
		}
	}
	flush()

	broker, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(broker.Close)
	kc := kafka.Config{Brokers: []string{broker.Addr()}, Partitions: 2}
	cmd, err := connector.NewCommander(ctx, connector.CommanderConfig{Kafka: kc, NodeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cmd.Close)
	g, err := connector.NewGateway(connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: []byte(rtTokenSecret), DrainWindow: time.Millisecond}, cmd, st)
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		b.Fatal(err)
	}
	runInProcessTB(b, "connector", func(ctx context.Context) error { return connector.Serve(ctx, cmd, g) })

	conn, _, err := websocket.DefaultDialer.Dial(wsURL(g.Addr().String()), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadLimit(64 << 20)
	tok, _ := auth.Sign([]byte(rtTokenSecret), "u", time.Hour, time.Now())
	if err := conn.WriteJSON(map[string]any{"op": "auth", "token": tok, "device": "d"}); err != nil {
		b.Fatal(err)
	}
	var ok map[string]any
	if err := conn.ReadJSON(&ok); err != nil || ok["op"] != "auth_ok" {
		b.Fatalf("auth: %v %v", ok, err)
	}
	var took []time.Duration
	b.ResetTimer()
	for i := range max(b.N, 5) {
		start := time.Now()
		if err := conn.WriteJSON(map[string]any{"op": "sync", "id": fmt.Sprint(i)}); err != nil {
			b.Fatal(err)
		}
		var r struct {
			Op    string `json:"op"`
			Convs []struct {
				Unread int `json:"unread"`
			} `json:"convs"`
		}
		if err := conn.ReadJSON(&r); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		if r.Op != "sync_ok" || len(r.Convs) != n || r.Convs[0].Unread != 5 || r.Convs[n-1].Unread != 5 {
			b.Fatalf("sync answered %s with %d conversations", r.Op, len(r.Convs))
		}
	}
	b.StopTimer()
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// runInProcessTB is runInProcess for benchmarks.
func runInProcessTB(tb testing.TB, name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("%s: %v", name, err)
		}
	})
}
