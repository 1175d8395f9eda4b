package fanout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Benchmarks of fanout's per-event work for a message in a group of 1,000
// members: resolving its recipients from the membership cache, routing
// them through the presence view to connector nodes, and encoding each
// node's push batch. (Decoding the event is schema.DecodeEvent's, measured
// in package schema.) Run with go test -run '^$' -bench . -benchmem ./fanout.
//
// The presence view holds 10 live nodes; 700 of the members are online,
// each with a phone on one node, and 200 of those also with a laptop on
// another: 900 deliveries to 10 nodes per event, 300 members offline.

const (
	benchConv    = "2lKGCVZf5PqQ8bW0ZKUVTXh5Qx3"
	benchMembers = 1000
	benchOnline  = 700
	benchLaptops = 200
	benchNodes   = 10
)

// benchBody is a chat message body of about 100 bytes.
var benchBody = []byte(`{"text":"Are we still on for the design review at 3pm? I moved it to room 4B.","mentions":["bob"]}`)

func benchUser(i int) string { return fmt.Sprintf("user-%06d", i) }
func benchNode(i int) string { return fmt.Sprintf("connector-%d", i) }

func benchMessage(seq int64) *parleyv1.Event {
	return &parleyv1.Event{Conv: benchConv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
		MsgId: fmt.Sprintf("2lKGHwTLl1m0cRCv%011d", seq), Cmid: fmt.Sprintf("5f0c6f43-3e4b-4a43-9a1e-%012d", seq),
		From: benchUser(int(seq % benchMembers)), Ts: 1_760_000_000_000 + seq, Kind: "text", Body: benchBody}
}

// benchMembersCache returns a cache that learnt the group from its created
// event, as fanout does when it reads it, and the group's members.
func benchMembersCache(b *testing.B) (*members, []string) {
	users := make([]string, benchMembers)
	for i := range users {
		users[i] = benchUser(i)
	}
	m := newMembers(nil, 16) // no store: a cached conversation is never loaded
	created := &parleyv1.Event{Conv: benchConv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8",
		From: users[0], Ts: 1_760_000_000_000, ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: users}
	got, err := m.recipients(context.Background(), created, time.Time{})
	if err != nil || len(got) != benchMembers {
		b.Fatalf("created: %d recipients, %v", len(got), err)
	}
	return m, users
}

// benchView returns a presence view fed the records the connectors write:
// a heartbeat per node, then each online member's devices per node.
func benchView(b *testing.B) *presenceView {
	now := time.Unix(1_760_000_000, 0)
	v := &presenceView{now: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		skip:  func(reason string) { b.Fatalf("presence record skipped: %s", reason) },
		nodes: map[string]*node{}, users: map[string][]string{}, pos: map[int32]int64{}}
	var offset int64
	put := func(key string, m proto.Message) {
		value, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		v.apply(&kgo.Record{Key: []byte(key), Value: value, Offset: offset})
		offset++
	}
	for i := range benchNodes {
		put("n/"+benchNode(i), &parleyv1.NodeHeartbeat{Node: benchNode(i), PushAddr: fmt.Sprintf("10.0.0.%d:7001", i+1), Ts: now.UnixMilli(), IntervalMs: 5000})
	}
	for i := range benchOnline {
		user, phone := benchUser(i), benchNode(i%benchNodes)
		put("u/"+user+"/"+phone, &parleyv1.UserPresence{User: user, Node: phone, Devices: []string{"phone"}, Ts: now.UnixMilli()})
		if i < benchLaptops {
			laptop := benchNode((i + 1) % benchNodes)
			put("u/"+user+"/"+laptop, &parleyv1.UserPresence{User: user, Node: laptop, Devices: []string{"laptop"}, Ts: now.UnixMilli()})
		}
	}
	return v
}

// BenchmarkRecipients resolves the recipients of the group's next message
// from the cache (members.recipients): shared, the list the messages
// before it got; listed, walking the members again (as after a membership
// change).
func BenchmarkRecipients(b *testing.B) {
	for _, listed := range []bool{false, true} {
		b.Run(map[bool]string{false: "shared", true: "listed"}[listed], func(b *testing.B) {
			m, _ := benchMembersCache(b)
			ctx := context.Background()
			ev := benchMessage(1)
			c := m.get(ev.Conv)
			var users []string
			b.ReportAllocs()
			for b.Loop() {
				ev.Seq++
				if listed {
					c.recips = nil
				}
				var err error
				if users, err = m.recipients(ctx, ev, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
			if len(users) != benchMembers {
				b.Fatalf("%d recipients, want %d", len(users), benchMembers)
			}
		})
	}
}

// BenchmarkRoute routes the group's members through the presence view
// (presenceView.route) to the nodes holding their devices.
func BenchmarkRoute(b *testing.B) {
	_, users := benchMembersCache(b)
	v := benchView(b)
	var live []nodeUsers
	var offline []string
	b.ReportAllocs()
	for b.Loop() {
		live, offline = v.route(users)
	}
	routed := 0
	for _, n := range live {
		routed += len(n.users)
	}
	if len(live) != benchNodes || routed != benchOnline+benchLaptops || len(offline) != benchMembers-benchOnline {
		b.Fatalf("routed %d deliveries, %d offline", routed, len(offline))
	}
}

// BenchmarkPushBatch encodes the push batches of one poll as push does: a
// PushBatch per node, here for 100 messages of the group, each push naming
// the members with a device on that node (about 90).
func BenchmarkPushBatch(b *testing.B) {
	const events = 100
	_, users := benchMembersCache(b)
	v := benchView(b)
	live, _ := v.route(users)
	batches := map[string]*nodeBatch{}
	for seq := int64(2); seq < 2+events; seq++ {
		ev := benchMessage(seq)
		for _, n := range live {
			if batches[n.id] == nil {
				batches[n.id] = &nodeBatch{addr: n.pushAddr}
			}
			batches[n.id].pushes = append(batches[n.id].pushes, &parleyv1.Push{Event: ev, Users: n.users})
		}
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		size = 0
		for _, nb := range batches {
			body, err := proto.Marshal(&parleyv1.PushBatch{From: "fanout", Pushes: nb.pushes})
			if err != nil {
				b.Fatal(err)
			}
			size += len(body)
		}
	}
	b.SetBytes(int64(size))
	if len(batches) != benchNodes {
		b.Fatalf("%d node batches", len(batches))
	}
	// One node's batch decodes back to what was encoded.
	nb := batches[benchNode(0)]
	body, err := proto.Marshal(&parleyv1.PushBatch{From: "fanout", Pushes: nb.pushes})
	if err != nil {
		b.Fatal(err)
	}
	var back parleyv1.PushBatch
	if err := proto.Unmarshal(body, &back); err != nil || len(back.Pushes) != events || !proto.Equal(back.Pushes[events-1], nb.pushes[events-1]) {
		b.Fatalf("batch decodes to %d pushes: %v", len(back.Pushes), err)
	}
}

// BenchmarkNotifications writes the notification records of a message for
// the group's 300 offline members (notification), the event's encoding
// taken as the events topic holds it.
func BenchmarkNotifications(b *testing.B) {
	ev := benchMessage(2)
	value, err := proto.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n = 0
		for i := benchOnline; i < benchMembers; i++ {
			n += len(notification(benchUser(i), value))
		}
	}
	b.SetBytes(int64(n))
}
