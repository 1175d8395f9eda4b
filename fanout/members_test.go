package fanout

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

func ev(conv string, seq int64, typ parleyv1.EventType, members ...string) *parleyv1.Event {
	e := &parleyv1.Event{Conv: conv, Seq: seq, Type: typ, MsgId: "m", From: "alice", Ts: seq, Members: members}
	switch typ {
	case parleyv1.EventType_EVENT_TYPE_CREATED:
		e.ConvKind = parleyv1.ConvKind_CONV_KIND_GROUP
	case parleyv1.EventType_EVENT_TYPE_MESSAGE:
		e.Kind, e.Body = "text", []byte(`"x"`)
	}
	return e
}

const (
	created = parleyv1.EventType_EVENT_TYPE_CREATED
	message = parleyv1.EventType_EVENT_TYPE_MESSAGE
	added   = parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED
	removed = parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED
)

// TestMembers: recipients follow member events; a conversation is loaded
// from the store, and cached only once the store holds what came before.
func TestMembers(t *testing.T) {
	ctx := context.Background()
	st := testutil.Pebble(t)
	m := newMembers(st, 2)
	want := func(e *parleyv1.Event, waitUntil time.Time, users ...string) {
		t.Helper()
		got, err := m.recipients(ctx, e, waitUntil)
		if err != nil {
			t.Fatal(err)
		}
		got = slices.Clone(got) // the list may be shared
		slices.Sort(got)
		slices.Sort(users)
		if !slices.Equal(got, users) {
			t.Fatalf("recipients of %s seq %d: %v, want %v", e.Conv, e.Seq, got, users)
		}
	}
	soon := time.Now().Add(time.Minute)

	// Seen from its creation: member events alone keep it right; a removal
	// reaches the removed, an addition the added.
	want(ev("g1", 1, created, "alice", "bob"), soon, "alice", "bob")
	want(ev("g1", 2, added, "carol"), soon, "alice", "bob", "carol")
	want(ev("g1", 3, removed, "bob"), soon, "alice", "bob", "carol")
	want(ev("g1", 4, message), soon, "alice", "carol")

	// Not cached, store up to date: loaded and cached.
	log := []*parleyv1.Event{ev("g2", 1, created, "alice", "bob", "dave"), ev("g2", 2, message)}
	if err := st.Append(ctx, log); err != nil {
		t.Fatal(err)
	}
	want(ev("g2", 3, message), soon, "alice", "bob", "dave")
	if m.get("g2") == nil {
		t.Fatal("a current load was not cached")
	}

	// Store behind and no time left to wait: the store still lists dave,
	// whom seq 4 (below) removed, so an event goes only to the users
	// certainly members at its seq: its sender, and the users a member
	// change adds or removes. Nothing is cached; once the store catches
	// up, the next load is right.
	m.clear()
	want(ev("g2", 6, message), time.Now(), "alice")
	want(ev("g2", 6, added, "erin"), time.Now(), "alice", "erin")
	want(ev("g2", 6, removed, "bob"), time.Now(), "alice", "bob")
	if m.get("g2") != nil {
		t.Fatal("a load from a store that is behind was cached")
	}
	if err := st.Append(ctx, []*parleyv1.Event{ev("g2", 3, message), ev("g2", 4, removed, "dave"), ev("g2", 5, added, "carol"), ev("g2", 6, message)}); err != nil {
		t.Fatal(err)
	}
	want(ev("g2", 7, message), soon, "alice", "bob", "carol")

	// Typing asks for the current members without caching anything.
	m.clear()
	if users, err := m.current(ctx, "nowhere"); err != nil || len(users) != 0 || m.get("nowhere") != nil {
		t.Fatalf("current of an unknown conversation: %v, %v", users, err)
	}
	if users, err := m.current(ctx, "g2"); err != nil || len(users) != 3 || m.get("g2") != nil {
		t.Fatalf("current of g2: %v, %v", users, err)
	}

	// The cache holds at most its capacity.
	want(ev("a", 1, created, "x"), soon, "x")
	want(ev("b", 1, created, "y"), soon, "y")
	want(ev("c", 1, created, "z"), soon, "z")
	if m.get("a") != nil || m.get("c") == nil {
		t.Fatal("the least recently used conversation was not evicted")
	}
}

// TestRecipientsShared: events that change no membership share one list
// of recipients, which is listed again after a change, and which leaves
// out a member loaded from a store ahead of fanout until the event that
// made them one.
func TestRecipientsShared(t *testing.T) {
	ctx := context.Background()
	st := testutil.Pebble(t)
	m := newMembers(st, 10)
	soon := time.Now().Add(time.Minute)
	get := func(e *parleyv1.Event, users ...string) []string {
		t.Helper()
		got, err := m.recipients(ctx, e, soon)
		if err != nil {
			t.Fatal(err)
		}
		sorted := slices.Sorted(slices.Values(got))
		if slices.Sort(users); !slices.Equal(sorted, users) {
			t.Fatalf("recipients of %s seq %d: %v, want %v", e.Conv, e.Seq, sorted, users)
		}
		return got
	}
	same := func(a, b []string) bool { return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0] }

	get(ev("g", 1, created, "alice", "bob"), "alice", "bob")
	a := get(ev("g", 2, message), "alice", "bob")
	if b := get(ev("g", 3, message), "alice", "bob"); !same(a, b) {
		t.Fatal("two messages in a row did not share their recipients")
	}
	if cap(a) != len(a) {
		t.Fatalf("a shared list has room to grow into (len %d, cap %d)", len(a), cap(a))
	}
	grown := get(ev("g", 4, added, "carol"), "alice", "bob", "carol")
	if same(a, grown) {
		t.Fatal("an addition got the list from before it")
	}
	c := get(ev("g", 5, message), "alice", "bob", "carol")
	gone := get(ev("g", 6, removed, "bob"), "alice", "bob", "carol")
	if same(c, gone) {
		t.Fatal("a removal got the list from before it")
	}
	get(ev("g", 7, message), "alice", "carol")

	// Loaded from a store that is ahead: dave joined at seq 5, after the
	// event pushed (seq 3), and is left out until seq 5, whatever event
	// comes with it (here a message, so that no membership change lists
	// the recipients again).
	log := []*parleyv1.Event{ev("h", 1, created, "alice", "bob"), ev("h", 2, message), ev("h", 3, message), ev("h", 4, message), ev("h", 5, added, "dave")}
	if err := st.Append(ctx, log); err != nil {
		t.Fatal(err)
	}
	get(ev("h", 3, message), "alice", "bob")
	get(ev("h", 4, message), "alice", "bob")
	get(ev("h", 5, message), "alice", "bob", "dave") // the event that made dave a member, as the store has it
	get(ev("h", 6, message), "alice", "bob", "dave")
}

// TestMembersKeepNoRecordMemory: fanout decodes each event sharing its
// record's memory (schema.DecodeSharedEvent), so what the members cache
// keeps of one must be copies. Events are decoded from records, resolved,
// and their records overwritten: the cached conversations are still found
// by their ids (one created by an event, one loaded from the store), with
// the members the events made.
func TestMembersKeepNoRecordMemory(t *testing.T) {
	ctx := context.Background()
	st := testutil.Pebble(t)
	if err := st.Append(ctx, []*parleyv1.Event{ev("h", 1, created, "alice", "bob"), ev("h", 2, message)}); err != nil {
		t.Fatal(err)
	}
	m := newMembers(st, 10)
	var values [][]byte
	resolve := func(e *parleyv1.Event) {
		t.Helper()
		v, err := e.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
		shared, err := schema.DecodeSharedEvent([]byte(e.Conv), v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.recipients(ctx, shared, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	resolve(ev("g", 1, created, "alice", "bob"))
	resolve(ev("g", 2, added, "carol"))
	resolve(ev("g", 3, message))
	resolve(ev("h", 3, message)) // loads h
	resolve(ev("h", 4, added, "dave"))
	for _, v := range values {
		for i := range v {
			v[i] = 'x'
		}
	}
	for conv, users := range map[string][]string{"g": {"alice", "bob", "carol"}, "h": {"alice", "bob", "dave"}} {
		c := m.get(conv)
		if c == nil || c.conv != conv {
			t.Fatalf("%s is not cached as itself: %+v", conv, c)
		}
		got, err := m.recipients(ctx, ev(conv, c.last+1, message), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if got = slices.Sorted(slices.Values(got)); !slices.Equal(got, users) {
			t.Fatalf("recipients in %s after the overwrite: %v, want %v", conv, got, users)
		}
	}
}
