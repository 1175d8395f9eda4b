package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// deadAfter is how many heartbeat intervals of silence make a node dead.
const deadAfter = 3

// presenceView is this instance's copy of the presence topic: which nodes
// are alive and where they take pushes, and which users have devices on
// which node. It reads every partition of the topic from the start, outside
// any group: every fanout instance needs all of it.
//
// A node counts as alive until deadAfter of its heartbeat intervals have
// passed since this instance last received its heartbeat (the local clock
// only, so clock skew between machines does not matter), or at once when its
// heartbeat is deleted by a clean shutdown.
type presenceView struct {
	cl    *kgo.Client
	adm   *kadm.Client
	topic string
	now   func() time.Time
	log   *slog.Logger
	skip  func(reason string) // counts a record skipped
	// gone, if set, is told of a node that shut down cleanly (its
	// heartbeat deleted); v.mu is held.
	gone func(node string)

	mu    sync.Mutex
	nodes map[string]*node
	// users holds, per user, the nodes where the user has devices: a
	// slice, as a user is on a node or two, and routing walks it for
	// every recipient of every event.
	users map[string][]string
	pos   map[int32]int64 // partition -> next offset to read
	moved chan struct{}   // closed and replaced when pos moves
}

type node struct {
	pushAddr string
	deadline time.Time
}

func newPresenceView(opts []kgo.Opt, topic string, now func() time.Time, log *slog.Logger, skip func(reason string)) (*presenceView, error) {
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, err
	}
	return &presenceView{cl: cl, adm: kadm.NewClient(cl), topic: topic, now: now, log: log, skip: skip,
		nodes: make(map[string]*node), users: make(map[string][]string), pos: make(map[int32]int64), moved: make(chan struct{})}, nil
}

func (v *presenceView) close() { v.cl.Close() }

// run reads the topic until ctx ends.
func (v *presenceView) run(ctx context.Context) error {
	for {
		fs := v.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				v.log.Warn("presence fetch failed", "partition", p, "err", err)
				ferr = err
			}
		})
		if ferr != nil && fs.NumRecords() == 0 {
			select { // let a failing broker breathe
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		}
		v.mu.Lock()
		fs.EachRecord(v.apply)
		close(v.moved)
		v.moved = make(chan struct{})
		v.mu.Unlock()
	}
}

// maxHeartbeatInterval bounds the heartbeat interval a node may announce:
// beyond it the record is malformed (and deadAfter intervals could
// overflow a time.Duration).
const maxHeartbeatInterval = schema.MaxHeartbeatInterval

// presenceRecord is a record of the presence topic, decoded and checked.
type presenceRecord struct {
	user, node string // user is "" for a node's heartbeat
	gone       bool   // a tombstone, or a user with no device left
	pushAddr   string
	interval   time.Duration
	devices    int
}

// decodePresence decodes and checks a record of the presence topic
// (presence.proto): a key "n/<node>" or "u/<user>/<node>" with valid ids;
// a heartbeat naming its node, a push address host:port and an interval of
// 1 ms to maxHeartbeatInterval; a user's presence naming its user and node.
// A nil value is a tombstone. The error wraps schema.ErrUndecodable or
// schema.ErrMalformed.
func decodePresence(key, value []byte) (presenceRecord, error) {
	user, nodeID, ok := schema.ParsePresenceKey(string(key))
	if !ok || !schema.ValidNodeID(nodeID) || (user != "" && !schema.ValidUserID(user)) {
		return presenceRecord{}, fmt.Errorf("%w: presence key %q", schema.ErrMalformed, schema.Clip(string(key)))
	}
	r := presenceRecord{user: user, node: nodeID, gone: value == nil}
	if r.gone {
		return r, nil
	}
	if user == "" {
		var hb parleyv1.NodeHeartbeat
		if err := proto.Unmarshal(value, &hb); err != nil {
			return presenceRecord{}, fmt.Errorf("%w: not a parley.v1.NodeHeartbeat: %v", schema.ErrUndecodable, err)
		}
		if hb.Node != nodeID {
			return presenceRecord{}, fmt.Errorf("%w: heartbeat of node %q under the key of %q", schema.ErrMalformed, schema.Clip(hb.Node), nodeID)
		}
		if hb.IntervalMs < 1 || hb.IntervalMs > maxHeartbeatInterval.Milliseconds() {
			return presenceRecord{}, fmt.Errorf("%w: heartbeat interval %d ms, want 1 to %d", schema.ErrMalformed, hb.IntervalMs, maxHeartbeatInterval.Milliseconds())
		}
		if !validPushAddr(hb.PushAddr) {
			return presenceRecord{}, fmt.Errorf("%w: push address %q is not host:port", schema.ErrMalformed, schema.Clip(hb.PushAddr))
		}
		r.pushAddr, r.interval = hb.PushAddr, time.Duration(hb.IntervalMs)*time.Millisecond
		return r, nil
	}
	var up parleyv1.UserPresence
	if err := proto.Unmarshal(value, &up); err != nil {
		return presenceRecord{}, fmt.Errorf("%w: not a parley.v1.UserPresence: %v", schema.ErrUndecodable, err)
	}
	if up.User != user || up.Node != nodeID {
		return presenceRecord{}, fmt.Errorf("%w: presence of %q on %q under the key of %q on %q", schema.ErrMalformed, schema.Clip(up.User), schema.Clip(up.Node), user, nodeID)
	}
	r.devices = len(up.Devices)
	r.gone = r.devices == 0
	return r, nil
}

// validPushAddr reports whether a is host:port with a port number, short
// enough to be an address.
func validPushAddr(a string) bool {
	if len(a) > 255 {
		return false
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 65536
}

// apply takes one record into the view; v.mu is held.
func (v *presenceView) apply(r *kgo.Record) {
	v.pos[r.Partition] = r.Offset + 1
	rec, err := decodePresence(r.Key, r.Value)
	if err != nil {
		reason := schema.SkipReason(err)
		v.skip(reason)
		v.log.Warn("skipping a presence record", "partition", r.Partition, "offset", r.Offset, "reason", reason, "err", err)
		return
	}
	v.take(rec)
}

// take applies a decoded record; v.mu is held.
func (v *presenceView) take(rec presenceRecord) {
	if rec.user == "" {
		if rec.gone {
			delete(v.nodes, rec.node)
			if v.gone != nil {
				v.gone(rec.node)
			}
			return
		}
		v.nodes[rec.node] = &node{pushAddr: rec.pushAddr, deadline: v.now().Add(deadAfter * rec.interval)}
		return
	}
	ids := v.users[rec.user]
	i := slices.Index(ids, rec.node)
	switch {
	case rec.gone && i >= 0:
		ids = slices.Delete(ids, i, i+1)
		if len(ids) == 0 {
			delete(v.users, rec.user)
		} else {
			v.users[rec.user] = ids
		}
	case !rec.gone && i < 0:
		v.users[rec.user] = append(ids, rec.node)
	}
}

// sync returns once the view holds every presence record the log had when
// sync was called: a device whose presence record was written before an
// event was sequenced is then known when the event is pushed.
func (v *presenceView) sync(ctx context.Context) error {
	ends, err := v.adm.ListEndOffsets(ctx, v.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("fanout: presence end offsets: %w", err)
	}
	for {
		v.mu.Lock()
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > v.pos[o.Partition] {
				behind = true
			}
		})
		moved := v.moved
		v.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nodeUsers is one live node's share of a route: where it takes pushes,
// and the users with a device there.
type nodeUsers struct {
	id, pushAddr string
	users        []string
}

// route groups users by the live nodes holding their devices, in the
// order the nodes are first met, and returns the users with none.
func (v *presenceView) route(users []string) (live []nodeUsers, offline []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	// Every node met, dead ones too (alive false), so that each is looked
	// up in v.nodes once.
	type met struct {
		nodeUsers
		alive bool
	}
	var nodes []met
	index := make(map[string]int) // id -> nodes[i]
	find := func(id string) *met {
		if i, ok := index[id]; ok {
			return &nodes[i]
		}
		n := v.nodes[id]
		m := met{nodeUsers: nodeUsers{id: id}, alive: n != nil && !now.After(n.deadline)}
		if m.alive {
			m.pushAddr = n.pushAddr
		}
		index[id] = len(nodes)
		nodes = append(nodes, m)
		return &nodes[len(nodes)-1]
	}
	for _, u := range users {
		online := false
		for _, id := range v.users[u] {
			if m := find(id); m.alive {
				m.users = append(m.users, u)
				online = true
			}
		}
		if !online {
			offline = append(offline, u)
		}
	}
	for _, m := range nodes {
		if m.alive {
			live = append(live, m.nodeUsers)
		}
	}
	return live, offline
}

// suspend treats node as dead until its next heartbeat: pushes to it
// failed, and waiting on it would hold up every other node's pushes.
func (v *presenceView) suspend(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if n := v.nodes[id]; n != nil {
		n.deadline = time.Time{}
	}
}

// alive reports whether node is alive.
func (v *presenceView) alive(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := v.nodes[id]
	return n != nil && !v.now().After(n.deadline)
}
