package connector

import (
	"hash/maphash"
	"slices"
	"sync"
)

// hub is the registry of this node's live sessions by user, split into
// shards by a hash of the user id so that lookups do not contend on one lock.
type hub struct {
	seed   maphash.Seed
	shards [64]hubShard
}

type hubShard struct {
	mu sync.RWMutex
	// users holds each user's sessions here, in no order: a slice, as a
	// user has a few, and a push walks them for every recipient.
	users map[string][]*session
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].users = make(map[string][]*session)
	}
	return h
}

func (h *hub) shard(user string) *hubShard {
	return &h.shards[maphash.String(h.seed, user)%uint64(len(h.shards))]
}

// add registers s (not registered yet) unless its user already has max
// sessions here. changed, if not nil, gets the user's devices here
// afterwards, under the user's lock (so that successive calls for one user
// see successive states).
func (h *hub) add(s *session, max int, changed func([]string)) bool {
	sh := h.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	set := sh.users[s.user]
	if len(set) >= max {
		return false
	}
	set = append(set, s)
	sh.users[s.user] = set
	if changed != nil {
		changed(devices(set))
	}
	return true
}

// remove unregisters s; changed is as for add.
func (h *hub) remove(s *session, changed func([]string)) {
	sh := h.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	set := sh.users[s.user]
	i := slices.Index(set, s)
	if i < 0 {
		return
	}
	last := len(set) - 1
	set[i], set[last] = set[last], nil
	if set = set[:last]; len(set) == 0 {
		delete(sh.users, s.user)
	} else {
		sh.users[s.user] = set
	}
	if changed != nil {
		changed(devices(set))
	}
}

// withDevices calls fn with user's devices here, under the user's lock.
func (h *hub) withDevices(user string, fn func([]string)) {
	sh := h.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	fn(devices(sh.users[user]))
}

// devices returns the sorted, distinct device ids of set.
func devices(set []*session) []string {
	out := make([]string, 0, len(set))
	for _, s := range set {
		out = append(out, s.device)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// sessions appends user's sessions on this node to out.
func (h *hub) sessions(user string, out []*session) []*session {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return append(out, sh.users[user]...)
}

// all returns every session on this node.
func (h *hub) all() []*session {
	var out []*session
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, set := range sh.users {
			out = append(out, set...)
		}
		sh.mu.RUnlock()
	}
	return out
}
