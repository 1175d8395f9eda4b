package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// presence publishes this node's part of the presence topic
// (schema/parley/v1/presence.proto): a heartbeat with the push address every
// interval, and each user's devices on this node whenever they change.
//
// Records of one user are produced in the order their changes happened (the
// hub calls publish under the user's shard lock, and one key's records keep
// their produce order), so the last record of a key is the current state. A
// record that fails to reach the log marks the user dirty; the next
// heartbeat republishes the user's current devices.
type presence struct {
	cl       *kgo.Client
	topic    string
	node     string
	pushAddr string
	interval time.Duration
	log      *slog.Logger
	hub      *hub
	now      func() time.Time

	mu    sync.Mutex
	dirty map[string]bool
}

// reclaimAfter is how long a node must have been silent before another
// node deletes its leftover presence records (a node killed without
// cleanup, whose id never comes back).
const reclaimAfter = time.Hour

// publish produces user's devices on this node (a tombstone for none),
// without blocking. The caller holds the user's hub shard lock. done, if
// not nil, gets the produce result.
func (p *presence) publish(user string, devices []string, done func(error)) {
	key := schema.PresenceUserKey(user, p.node)
	rec := &kgo.Record{Topic: p.topic, Key: []byte(key)}
	if len(devices) > 0 {
		v, err := proto.Marshal(&parleyv1.UserPresence{User: user, Node: p.node, Devices: devices, Ts: p.now().UnixMilli()})
		if err != nil {
			panic(err) // a plain message always marshals
		}
		rec.Value = v
	}
	// TryProduce never blocks (the caller holds a hub lock): with the
	// producer's buffer full it fails at once, and the user is retried.
	p.cl.TryProduce(context.Background(), rec, func(_ *kgo.Record, err error) {
		if err != nil {
			p.mu.Lock()
			p.dirty[user] = true
			p.mu.Unlock()
			p.log.Warn("presence not published; retrying at the next heartbeat", "user", user, "err", err)
		}
		if done != nil {
			done(err)
		}
	})
}

// publishWait publishes and waits for the log to have the record, up to
// ctx.
func (p *presence) publishWait(ctx context.Context, user string, devices []string) error {
	res := make(chan error, 1)
	p.publish(user, devices, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *presence) heartbeat(ctx context.Context) error {
	v, err := proto.Marshal(&parleyv1.NodeHeartbeat{Node: p.node, PushAddr: p.pushAddr, Ts: p.now().UnixMilli(), IntervalMs: p.interval.Milliseconds()})
	if err != nil {
		return err
	}
	return p.cl.ProduceSync(ctx, &kgo.Record{Topic: p.topic, Key: []byte(schema.PresenceNodeKey(p.node)), Value: v}).FirstErr()
}

// republishDirty publishes again the users whose last record failed.
func (p *presence) republishDirty() {
	p.mu.Lock()
	users := make([]string, 0, len(p.dirty))
	for u := range p.dirty {
		users = append(users, u)
	}
	clear(p.dirty)
	p.mu.Unlock()
	for _, u := range users {
		p.hub.withDevices(u, func(devices []string) { p.publish(u, devices, nil) })
	}
}

// start clears what an earlier run of this node id, or a node long dead,
// left in the topic, then writes the first heartbeat. opts reach the
// cluster (for reading the topic to its end).
func (p *presence) start(ctx context.Context, opts []kgo.Opt) error {
	type nodeState struct {
		lastTS int64
		users  []string // keys of user records
	}
	nodes := make(map[string]*nodeState)
	get := func(n string) *nodeState {
		if nodes[n] == nil {
			nodes[n] = &nodeState{}
		}
		return nodes[n]
	}
	err := kafka.ReadToEnd(ctx, opts, p.topic, nil, func(r *kgo.Record) error {
		user, node, ok := schema.ParsePresenceKey(string(r.Key))
		if !ok {
			return nil
		}
		n := get(node)
		ts := r.Timestamp.UnixMilli()
		if user == "" {
			var hb parleyv1.NodeHeartbeat
			if r.Value != nil && proto.Unmarshal(r.Value, &hb) == nil && hb.Ts > ts {
				ts = hb.Ts
			}
		} else if r.Value != nil {
			n.users = append(n.users, string(r.Key))
		} else {
			n.users = slices.DeleteFunc(n.users, func(k string) bool { return k == string(r.Key) })
		}
		n.lastTS = max(n.lastTS, ts)
		return nil
	})
	if err != nil {
		return fmt.Errorf("connector: read presence: %w", err)
	}
	cutoff := p.now().Add(-reclaimAfter).UnixMilli()
	var tombs []*kgo.Record
	for node, n := range nodes {
		if node != p.node && n.lastTS > cutoff {
			continue
		}
		for _, k := range n.users {
			tombs = append(tombs, &kgo.Record{Topic: p.topic, Key: []byte(k)})
		}
		if node != p.node {
			tombs = append(tombs, &kgo.Record{Topic: p.topic, Key: []byte(schema.PresenceNodeKey(node))})
		}
	}
	if len(tombs) > 0 {
		if err := p.cl.ProduceSync(ctx, tombs...).FirstErr(); err != nil {
			return fmt.Errorf("connector: clear old presence: %w", err)
		}
		p.log.Info("cleared old presence records", "records", len(tombs))
	}
	return p.heartbeat(ctx)
}

// run writes a heartbeat every interval until ctx ends.
func (p *presence) run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, p.interval)
		if err := p.heartbeat(hctx); err != nil && !errors.Is(err, context.Canceled) {
			p.log.Warn("presence heartbeat failed", "err", err)
		}
		cancel()
		p.republishDirty()
	}
}

// stop removes the node's heartbeat, so fanout stops pushing here at once.
// The sessions are gone by then and their records were removed with them.
func (p *presence) stop(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return err
	}
	return p.cl.ProduceSync(ctx, &kgo.Record{Topic: p.topic, Key: []byte(schema.PresenceNodeKey(p.node))}).FirstErr()
}
