package fanout

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestRoute: route groups users by the live nodes holding their devices,
// in the order the nodes are first met, each node's users in the order
// given, and returns the users with no device on a live node; a node gone
// silent and nodes never heard of included. The answer is checked against
// one worked out from the view's maps directly.
func TestRoute(t *testing.T) {
	now := time.Unix(1_760_000_000, 0)
	v := &presenceView{now: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		nodes: map[string]*node{}, users: map[string][]string{}, pos: map[int32]int64{}}
	const nodes = 24
	for i := range nodes {
		v.take(presenceRecord{node: fmt.Sprintf("node-%d", i), pushAddr: fmt.Sprintf("127.0.0.%d:7001", i+1), interval: time.Second})
	}
	v.nodes["node-5"].deadline = now.Add(-time.Millisecond) // silent for too long
	rng := rand.New(rand.NewPCG(1, 2))
	var users []string
	for u := range 500 {
		user := fmt.Sprintf("user-%d", u)
		users = append(users, user)
		for range rng.IntN(4) { // 0-3 devices; node-<nodes> and past are unknown nodes
			v.take(presenceRecord{user: user, node: fmt.Sprintf("node-%d", rng.IntN(nodes+3)), devices: 1})
		}
	}

	live, offline := v.route(users)

	var want []nodeUsers
	var wantOffline []string
	for _, u := range users {
		online := false
		for _, id := range v.users[u] {
			n := v.nodes[id]
			if n == nil || now.After(n.deadline) {
				continue
			}
			online = true
			i := slices.IndexFunc(want, func(nu nodeUsers) bool { return nu.id == id })
			if i < 0 {
				i = len(want)
				want = append(want, nodeUsers{id: id, pushAddr: n.pushAddr})
			}
			want[i].users = append(want[i].users, u)
		}
		if !online {
			wantOffline = append(wantOffline, u)
		}
	}
	if len(want) != nodes-1 {
		t.Fatalf("the test routes to %d nodes, want all %d live ones", len(want), nodes-1)
	}
	if !slices.EqualFunc(live, want, func(a, b nodeUsers) bool {
		return a.id == b.id && a.pushAddr == b.pushAddr && slices.Equal(a.users, b.users)
	}) {
		t.Errorf("route gave\n%v\nwant\n%v", live, want)
	}
	if !slices.Equal(offline, wantOffline) {
		t.Errorf("offline %v, want %v", offline, wantOffline)
	}
}
