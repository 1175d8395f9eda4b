package allinone_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/parley-im/parley/allinone"
	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/internal/allinonetest"
	"github.com/parley-im/parley/internal/testutil"
)

// TestMetricsUnderTraffic: a loaded all-in-one node's metrics move. Two
// users chat over real WebSockets, one connection is refused for a bad
// token; then every role's metrics named in the operator's dashboard hold
// non-zero values (the consumer lag is present for each consumer group),
// and the public listener serves them at /metrics.
func TestMetricsUnderTraffic(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	reg := prometheus.NewRegistry()
	n := allinonetest.Run(t, allinone.Config{
		DataDir: t.TempDir(), BrokerListen: "127.0.0.1:0", Partitions: 4, Listen: "127.0.0.1:0",
		TokenSecret: secret, APIKey: []byte(strings.Repeat("k", 16)),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer: reg, Gateway: connector.GatewayConfig{Metrics: reg},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := "ws://" + n.GatewayAddr().String() + "/v1/ws"
	dial := func(user, token string) (*client.Client, error) {
		return client.Dial(ctx, client.Config{
			URLs: []string{url}, Device: user + "-1",
			Token:  func(context.Context) (string, error) { return token, nil },
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}
	token := func(user string) string {
		tok, err := auth.Sign(secret, user, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, err := dial("alice", token("alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := dial("bob", token("bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if c, err := dial("mallory", "not-a-token"); err == nil {
		c.Close()
		t.Fatal("a bad token was accepted")
	}

	conv, err := alice.Create(ctx, "group", []string{"bob"}, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	const sends = 5
	for range sends {
		if _, err := alice.Send(ctx, conv, "text", "hello"); err != nil {
			t.Fatal(err)
		}
	}
	messages := 0
	deadline := time.After(30 * time.Second)
	for messages < sends {
		select {
		case ev := <-bob.Events():
			if ev.Type == "message" {
				messages++
			}
		case <-deadline:
			t.Fatalf("bob got %d of %d messages", messages, sends)
		}
	}
	// Pushes can come before the writer stores the events: sync and history
	// are read until the store has the conversation and its messages.
	testutil.WaitFor(t, 10*time.Second, "bob's sync and history to show the conversation", func() bool {
		convs, err := bob.Sync(ctx)
		if err != nil || len(convs) != 1 {
			return false
		}
		evs, _, err := bob.History(ctx, conv, 0, 0, 100)
		return err == nil && len(evs) == sends+1
	})

	// Every series of name whose labels include want, summed: a counter's
	// or gauge's value, a histogram's count.
	sum := func(name string, want map[string]string) (total float64, found bool) {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
		series:
			for _, m := range f.GetMetric() {
				for k, v := range want {
					if !hasLabel(m, k, v) {
						continue series
					}
				}
				found = true
				switch {
				case m.Counter != nil:
					total += m.Counter.GetValue()
				case m.Gauge != nil:
					total += m.Gauge.GetValue()
				case m.Histogram != nil:
					total += float64(m.Histogram.GetSampleCount())
				}
			}
		}
		return total, found
	}
	nonZero := []struct {
		name   string
		labels map[string]string
	}{
		{"parley_connector_connections", nil},
		{"parley_connector_connections_opened_total", nil},
		{"parley_connector_auth_failures_total", map[string]string{"reason": "bad_token"}},
		{"parley_connector_connections_closed_total", map[string]string{"code": "4001"}},
		{"parley_connector_frames_total", map[string]string{"direction": "in"}},
		{"parley_connector_frames_total", map[string]string{"direction": "out"}},
		{"parley_connector_send_ack_seconds", nil},
		{"parley_connector_commands_total", map[string]string{"op": "send", "status": "ok"}},
		{"parley_connector_pushed_events_total", nil},
		{"parley_sequencer_commands_total", map[string]string{"status": "sequenced"}},
		{"parley_sequencer_events_total", nil},
		{"parley_sequencer_transaction_seconds", nil},
		{"parley_sequencer_transactions_total", map[string]string{"result": "committed"}},
		{"parley_writer_events_total", nil},
		{"parley_store_seconds", map[string]string{"role": "writer", "op": "append"}},
		{"parley_store_seconds", map[string]string{"role": "connector", "op": "user_conversations"}},
		{"parley_store_seconds", map[string]string{"role": "connector", "op": "events"}},
		{"parley_fanout_events_total", nil},
		{"parley_fanout_pushes_total", map[string]string{"node": "dev"}},
		{"parley_kafka_produce_records_total", map[string]string{"role": "sequencer"}},
		{"parley_kafka_produce_records_total", map[string]string{"role": "connector", "client": "commands"}},
		{"parley_kafka_fetch_records_total", map[string]string{"role": "writer"}},
		{"parley_kafka_fetch_records_total", map[string]string{"role": "fanout", "client": "events"}},
	}
	for _, c := range nonZero {
		// Some move a moment after the messages arrive (the writer, the
		// sequencer's metrics of the transaction's end).
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%s%v above zero", c.name, c.labels), func() bool {
			v, _ := sum(c.name, c.labels)
			return v > 0
		})
	}
	for _, present := range []struct {
		name   string
		labels map[string]string
	}{
		{"parley_records_skipped_total", map[string]string{"role": "writer"}},
		// Fanout reads the store only for conversations it has not seen
		// from their start.
		{"parley_store_seconds", map[string]string{"role": "fanout", "op": "members"}},
		{"parley_fanout_push_failures_total", map[string]string{"node": "dev"}},
		{"parley_sequencer_transactions_total", map[string]string{"result": "aborted"}},
	} {
		if _, found := sum(present.name, present.labels); !found {
			t.Errorf("no series %s%v", present.name, present.labels)
		}
	}
	// The lag of each group is measured once it has committed offsets.
	for _, role := range []string{"sequencer", "writer", "fanout"} {
		testutil.WaitFor(t, 20*time.Second, role+"'s consumer lag", func() bool {
			_, found := sum("parley_consumer_lag", map[string]string{"role": role, "topic": topicOf(role)})
			return found
		})
	}

	resp, err := http.Get("http://" + n.GatewayAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, errors.Join(err))
	}
	for _, want := range []string{"parley_connector_connections 2", `parley_sequencer_commands_total{status="sequenced"}`, "parley_consumer_lag{"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("public /metrics lacks %q", want)
		}
	}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// topicOf is the topic role's consumer group commits on.
func topicOf(role string) string {
	if role == "sequencer" {
		return "parley.commands"
	}
	return "parley.events"
}
