package connector_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// presenceNow reads the presence topic to its end and returns each key's
// last value (nil for a tombstone).
func presenceNow(t *testing.T, kc kafka.Config) map[string][]byte {
	t.Helper()
	last := make(map[string][]byte)
	err := kafka.ReadToEnd(context.Background(), kc.ClientOpts(), kc.Topics().Presence, nil, func(r *kgo.Record) error {
		last[string(r.Key)] = r.Value
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func devicesOf(t *testing.T, v []byte) []string {
	t.Helper()
	if v == nil {
		return nil
	}
	var up parleyv1.UserPresence
	if err := proto.Unmarshal(v, &up); err != nil {
		t.Fatal(err)
	}
	return up.Devices
}

// TestPresence: the node publishes its heartbeat and each user's devices as
// they connect and leave, clears what an earlier run of its node id left,
// and removes its heartbeat when it stops.
func TestPresence(t *testing.T) {
	e := newEnv(t)
	e.sequencer()
	// What a killed earlier run of node-1 left: zed, never cleaned up.
	cl, err := kgo.NewClient(e.kc.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(context.Background(), cl, e.kc); err != nil {
		t.Fatal(err)
	}
	stale, _ := proto.Marshal(&parleyv1.UserPresence{User: "zed", Node: "node-1", Devices: []string{"d"}, Ts: 1})
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: e.kc.Topics().Presence, Key: []byte(schema.PresenceUserKey("zed", "node-1")), Value: stale}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	g := newGatewayOn(t, e, connector.GatewayConfig{PushListen: "127.0.0.1:0", PushSecret: pushSecret, HeartbeatInterval: 50 * time.Millisecond})
	userKey := schema.PresenceUserKey("alice", "node-1")
	nodeKey := schema.PresenceNodeKey("node-1")
	phone := g.login(t, "alice", "phone")
	// auth_ok came after the log had the record.
	p := presenceNow(t, e.kc)
	if got := devicesOf(t, p[userKey]); !slices.Equal(got, []string{"phone"}) {
		t.Fatalf("alice's devices after the phone connected: %v", got)
	}
	if v, ok := p[schema.PresenceUserKey("zed", "node-1")]; !ok || v != nil {
		t.Fatalf("the earlier run's record of zed was not deleted: %v", v)
	}
	var hb parleyv1.NodeHeartbeat
	if err := proto.Unmarshal(p[nodeKey], &hb); err != nil || hb.PushAddr != g.g.PushAddr().String() || hb.IntervalMs != 50 {
		t.Fatalf("heartbeat %v (%v)", &hb, err)
	}
	first := hb.Ts
	laptop := g.login(t, "alice", "laptop")
	if got := devicesOf(t, presenceNow(t, e.kc)[userKey]); !slices.Equal(got, []string{"laptop", "phone"}) {
		t.Fatalf("alice's devices with two connected: %v", got)
	}
	testutil.WaitFor(t, 10*time.Second, "a later heartbeat", func() bool {
		var hb parleyv1.NodeHeartbeat
		return proto.Unmarshal(presenceNow(t, e.kc)[nodeKey], &hb) == nil && hb.Ts > first
	})
	phone.conn.Close()
	testutil.WaitFor(t, 10*time.Second, "the phone to leave alice's devices", func() bool {
		return slices.Equal(devicesOf(t, presenceNow(t, e.kc)[userKey]), []string{"laptop"})
	})
	laptop.conn.Close()
	testutil.WaitFor(t, 10*time.Second, "alice's record to be deleted", func() bool {
		v, ok := presenceNow(t, e.kc)[userKey]
		return ok && v == nil
	})
	g.stop()
	if v, ok := presenceNow(t, e.kc)[nodeKey]; !ok || v != nil {
		t.Fatalf("the heartbeat outlived a clean stop: %v", v)
	}
}
