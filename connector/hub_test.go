package connector

import (
	"slices"
	"testing"
)

// TestHub: sessions come and go in any order; a user's sessions and
// devices are always the ones registered, and the cap holds.
func TestHub(t *testing.T) {
	h := newHub()
	g := &Gateway{}
	mk := func(user, device string) *session { return &session{g: g, user: user, device: device} }
	a1, a2, a3, b1 := mk("alice", "phone"), mk("alice", "laptop"), mk("alice", "phone"), mk("bob", "phone")
	var devs []string
	changed := func(d []string) { devs = d }
	for _, s := range []*session{a1, a2, a3, b1} {
		if !h.add(s, 3, changed) {
			t.Fatalf("add %s/%s refused", s.user, s.device)
		}
	}
	if h.add(mk("alice", "tablet"), 3, nil) {
		t.Fatal("a fourth session of alice was taken past the cap of 3")
	}
	same := func(got, want []*session) bool {
		return len(got) == len(want) && !slices.ContainsFunc(want, func(s *session) bool { return !slices.Contains(got, s) })
	}
	if got := h.sessions("alice", nil); !same(got, []*session{a1, a2, a3}) {
		t.Fatalf("alice's sessions: %v", got)
	}
	h.remove(a1, changed)
	if got := h.sessions("alice", nil); !same(got, []*session{a2, a3}) {
		t.Fatalf("after removing one: %v", got)
	}
	if !slices.Equal(devs, []string{"laptop", "phone"}) {
		t.Fatalf("devices %v", devs)
	}
	h.remove(a1, changed) // twice: nothing changes
	h.remove(a3, changed)
	if !slices.Equal(devs, []string{"laptop"}) {
		t.Fatalf("devices %v", devs)
	}
	h.remove(a2, changed)
	if len(devs) != 0 || len(h.sessions("alice", nil)) != 0 {
		t.Fatalf("alice gone, still %v", devs)
	}
	if _, ok := h.shard("alice").users["alice"]; ok {
		t.Fatal("a user without sessions keeps an entry")
	}
	if got := h.all(); !same(got, []*session{b1}) {
		t.Fatalf("all: %v", got)
	}
}
