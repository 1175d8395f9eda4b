// Package storetest is the conformance suite every store.Store
// implementation must pass. An implementation's test calls Run with a
// function that returns a new, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// Run runs the conformance suite. newStore must return an empty store; Run
// closes it.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"RangeForward", testRangeForward},
		{"RangeBackward", testRangeBackward},
		{"InvalidRange", testInvalidRange},
		{"NotFound", testNotFound},
		{"Head", testHead},
		{"Membership", testMembership},
		{"ReadCursorNeverBack", testReadCursor},
		{"UserConversations", testUserConversations},
		{"ReplayIsIdempotent", testReplay},
		{"ConversationsAreSeparate", testSeparate},
		{"PagingAcrossPartitions", testPaging},
		{"CountMessages", testCountMessages},
		{"RevokedBodiesAreNotServed", testRevoke},
		{"LargestEvents", testLargest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

var ctx = context.Background()

// Events builds a well-formed history for conv: created by owner with
// members, then n messages alternating between the members.
func Events(conv, owner string, members []string, n int) []*parleyv1.Event {
	all := append([]string{owner}, members...)
	evs := []*parleyv1.Event{{
		Conv: conv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: conv + "-c",
		From: owner, Ts: 1000, ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "t " + conv, Members: all,
	}}
	for i := 0; i < n; i++ {
		seq := int64(i + 2)
		from := all[i%len(all)]
		evs = append(evs, &parleyv1.Event{
			Conv: conv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
			MsgId: fmt.Sprintf("%s-%d", conv, seq), Cmid: fmt.Sprintf("c%d", i), From: from,
			Ts: 1000 + seq, Kind: "text", Body: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		})
	}
	return evs
}

func mustAppend(t *testing.T, s store.Store, evs []*parleyv1.Event) {
	t.Helper()
	if err := s.Append(ctx, evs); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func seqs(evs []*parleyv1.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func checkRange(t *testing.T, s store.Store, conv string, r store.Range, want []int64, wantMore bool) []*parleyv1.Event {
	t.Helper()
	got, more, err := s.Events(ctx, conv, r)
	if err != nil {
		t.Fatalf("Events(%+v): %v", r, err)
	}
	if !slices.Equal(seqs(got), want) || more != wantMore {
		t.Fatalf("Events(%+v) = %v more=%v, want %v more=%v", r, seqs(got), more, want, wantMore)
	}
	return got
}

func testRangeForward(t *testing.T, s store.Store) {
	evs := Events("c1", "alice", []string{"bob"}, 49) // seqs 1..50
	mustAppend(t, s, evs)
	got := checkRange(t, s, "c1", store.Range{After: 0, Limit: 10}, seqRange(1, 10), true)
	for i, e := range got {
		if !proto.Equal(e, evs[i]) {
			t.Fatalf("event %d round-trip: got %v want %v", i, e, evs[i])
		}
	}
	checkRange(t, s, "c1", store.Range{After: 45, Limit: 10}, seqRange(46, 50), false)
	checkRange(t, s, "c1", store.Range{After: 40, Limit: 10}, seqRange(41, 50), false)
	checkRange(t, s, "c1", store.Range{After: 50, Limit: 10}, nil, false)
	checkRange(t, s, "c1", store.Range{After: math.MaxInt64, Limit: 10}, nil, false)
	checkRange(t, s, "c1", store.Range{Before: math.MaxInt64, Limit: 3}, seqRange(48, 50), true)
	checkRange(t, s, "c1", store.Range{After: 0, Limit: store.MaxRangeLimit}, seqRange(1, 50), false)
}

func testRangeBackward(t *testing.T, s store.Store) {
	mustAppend(t, s, Events("c1", "alice", []string{"bob"}, 49))
	checkRange(t, s, "c1", store.Range{Before: 51, Limit: 10}, seqRange(41, 50), true)
	checkRange(t, s, "c1", store.Range{Before: 1000, Limit: 5}, seqRange(46, 50), true)
	checkRange(t, s, "c1", store.Range{Before: 6, Limit: 10}, seqRange(1, 5), false)
	checkRange(t, s, "c1", store.Range{Before: 11, Limit: 10}, seqRange(1, 10), false)
	checkRange(t, s, "c1", store.Range{Before: 1, Limit: 10}, nil, false)
}

func testInvalidRange(t *testing.T, s store.Store) {
	mustAppend(t, s, Events("c1", "alice", nil, 3))
	for _, r := range []store.Range{
		{Limit: 0}, {Limit: store.MaxRangeLimit + 1}, {After: -1, Limit: 5},
		{Before: -1, Limit: 5}, {After: 1, Before: 3, Limit: 5},
	} {
		if _, _, err := s.Events(ctx, "c1", r); !errors.Is(err, store.ErrInvalidRange) {
			t.Errorf("Events(%+v) error = %v, want ErrInvalidRange", r, err)
		}
	}
}

func testNotFound(t *testing.T, s store.Store) {
	if _, err := s.Conversation(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Conversation(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Membership(ctx, "nope", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Membership(unknown) error = %v, want ErrNotFound", err)
	}
	checkRange(t, s, "nope", store.Range{Limit: 10}, nil, false)
	if ms, err := s.Members(ctx, "nope"); err != nil || len(ms) != 0 {
		t.Errorf("Members(unknown) = %v, %v; want none", ms, err)
	}
	if cs, err := s.UserConversations(ctx, "nobody"); err != nil || len(cs) != 0 {
		t.Errorf("UserConversations(unknown) = %v, %v; want none", cs, err)
	}
}

func testHead(t *testing.T, s store.Store) {
	evs := Events("c1", "alice", []string{"bob"}, 5)
	mustAppend(t, s, evs[:3])
	mustAppend(t, s, evs[3:])
	h, err := s.Conversation(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Conversation{Conv: "c1", Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "t c1", LastSeq: 6, CreatedTS: 1000}
	if h != want {
		t.Fatalf("Conversation = %+v, want %+v", h, want)
	}
}

func memberEvent(conv string, seq int64, typ parleyv1.EventType, from string, users ...string) *parleyv1.Event {
	return &parleyv1.Event{Conv: conv, Seq: seq, Type: typ, MsgId: fmt.Sprintf("%s-%d", conv, seq), From: from, Ts: 2000 + seq, Members: users}
}

func readEvent(conv string, seq int64, from string, target int64) *parleyv1.Event {
	return &parleyv1.Event{Conv: conv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_READ, MsgId: fmt.Sprintf("%s-%d", conv, seq), From: from, Ts: 2000 + seq, Target: target}
}

func users(ms []store.Membership) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.User)
	}
	return out
}

func testMembership(t *testing.T, s store.Store) {
	evs := Events("c1", "alice", []string{"bob", "carol"}, 2) // seqs 1..3
	evs = append(evs,
		memberEvent("c1", 4, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, "alice", "dave"),
		memberEvent("c1", 5, parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED, "alice", "carol"),
	)
	mustAppend(t, s, evs)
	ms, err := s.Members(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := users(ms); !slices.Equal(got, []string{"alice", "bob", "dave"}) {
		t.Fatalf("Members = %v", got)
	}
	m, err := s.Membership(ctx, "c1", "carol")
	if err != nil || m.Current() || m.JoinedSeq != 1 || m.RemovedSeq != 5 {
		t.Fatalf("Membership(carol) = %+v, %v; want joined 1, removed 5", m, err)
	}
	m, err = s.Membership(ctx, "c1", "dave")
	if err != nil || !m.Current() || m.JoinedSeq != 4 {
		t.Fatalf("Membership(dave) = %+v, %v; want joined 4", m, err)
	}
	// Carol rejoins: her cursor starts again where she rejoined.
	mustAppend(t, s, []*parleyv1.Event{
		readEvent("c1", 6, "dave", 5),
		memberEvent("c1", 7, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, "alice", "carol"),
	})
	m, err = s.Membership(ctx, "c1", "carol")
	if err != nil || !m.Current() || m.JoinedSeq != 7 || m.RemovedSeq != 0 || m.ReadSeq != 7 {
		t.Fatalf("Membership(carol) after rejoin = %+v, %v; want joined 7, read 7", m, err)
	}
	// Leaving and rejoining within one batch.
	mustAppend(t, s, []*parleyv1.Event{
		readEvent("c1", 9, "dave", 8),
		memberEvent("c1", 10, parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED, "alice", "dave"),
		memberEvent("c1", 11, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, "alice", "dave"),
	})
	m, err = s.Membership(ctx, "c1", "dave")
	if err != nil || !m.Current() || m.JoinedSeq != 11 || m.ReadSeq != 11 {
		t.Fatalf("Membership(dave) after leaving and rejoining = %+v, %v; want joined 11, read 11", m, err)
	}
}

func testReadCursor(t *testing.T, s store.Store) {
	// alice writes seqs 2..11; bob reads.
	evs := Events("c1", "alice", []string{"bob"}, 0)
	for seq := int64(2); seq <= 11; seq++ {
		evs = append(evs, &parleyv1.Event{Conv: "c1", Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: fmt.Sprint("m", seq),
			From: "alice", Ts: 1000 + seq, Kind: "text", Body: []byte(`"x"`)})
	}
	evs = append(evs, readEvent("c1", 12, "bob", 4), readEvent("c1", 13, "bob", 9))
	mustAppend(t, s, evs)
	m, err := s.Membership(ctx, "c1", "bob")
	if err != nil || m.ReadSeq != 9 {
		t.Fatalf("Membership(bob) = %+v, %v; want read 9", m, err)
	}
	// Replaying the earlier read moves nothing back.
	mustAppend(t, s, evs[11:12])
	if m, _ := s.Membership(ctx, "c1", "bob"); m.ReadSeq != 9 {
		t.Fatalf("after replaying an earlier read the cursor is %d, want 9", m.ReadSeq)
	}
	mustAppend(t, s, []*parleyv1.Event{readEvent("c1", 14, "bob", 12)})
	if m, _ := s.Membership(ctx, "c1", "bob"); m.ReadSeq != 12 {
		t.Fatalf("read cursor = %d, want 12", m.ReadSeq)
	}
	// The user's own message does not move the cursor; a read of less
	// after it moves nothing back, even in one batch.
	mustAppend(t, s, []*parleyv1.Event{
		{Conv: "c1", Seq: 15, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m15", From: "bob", Ts: 1015, Kind: "text", Body: []byte(`"y"`)},
		readEvent("c1", 16, "bob", 13), readEvent("c1", 17, "bob", 11),
	})
	if m, _ := s.Membership(ctx, "c1", "bob"); m.ReadSeq != 13 {
		t.Fatalf("bob's cursor is %d, want 13", m.ReadSeq)
	}
	if m, _ := s.Membership(ctx, "c1", "alice"); m.ReadSeq != 1 {
		t.Fatalf("alice's cursor is %d, want 1: it starts where she joined", m.ReadSeq)
	}
}

func testUserConversations(t *testing.T, s store.Store) {
	mustAppend(t, s, Events("c2", "alice", []string{"bob"}, 3))
	mustAppend(t, s, Events("c1", "bob", []string{"alice"}, 7))
	mustAppend(t, s, Events("c3", "carol", []string{"dave"}, 1))
	mustAppend(t, s, []*parleyv1.Event{readEvent("c1", 9, "alice", 5)})
	cs, err := s.UserConversations(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Conv != "c1" || cs[1].Conv != "c2" {
		t.Fatalf("UserConversations(alice) = %+v", cs)
	}
	if cs[0].LastSeq != 9 || cs[0].ReadSeq != 5 || cs[0].JoinedSeq != 1 || cs[0].Title != "t c1" || cs[0].Kind != parleyv1.ConvKind_CONV_KIND_GROUP {
		t.Fatalf("c1 entry = %+v", cs[0])
	}
	if cs[1].LastSeq != 4 || cs[1].ReadSeq != 1 {
		t.Fatalf("c2 entry = %+v", cs[1])
	}
	mustAppend(t, s, []*parleyv1.Event{memberEvent("c2", 5, parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED, "alice", "alice")})
	cs, err = s.UserConversations(ctx, "alice")
	if err != nil || len(cs) != 1 || cs[0].Conv != "c1" {
		t.Fatalf("after leaving c2: %+v, %v", cs, err)
	}
}

// testReplay applies a history, then replays prefixes of it, and checks the
// store ends as if each event were applied once.
func testReplay(t *testing.T, s store.Store) {
	evs := Events("c1", "alice", []string{"bob", "carol"}, 20)
	evs = append(evs,
		memberEvent("c1", 22, parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED, "alice", "carol"),
		readEvent("c1", 23, "bob", 20),
		memberEvent("c1", 24, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, "alice", "dave"),
	)
	mustAppend(t, s, evs)
	// A writer that crashed before committing its offsets replays from an
	// earlier position, in batches.
	for _, cut := range []int{0, 5, 21} {
		for i := cut; i < len(evs); i += 7 {
			mustAppend(t, s, evs[i:min(i+7, len(evs))])
		}
	}
	checkRange(t, s, "c1", store.Range{Limit: 100}, seqRange(1, 24), false)
	ms, err := s.Members(ctx, "c1")
	if err != nil || !slices.Equal(users(ms), []string{"alice", "bob", "dave"}) {
		t.Fatalf("Members after replay = %v, %v", users(ms), err)
	}
	if m, _ := s.Membership(ctx, "c1", "bob"); m.ReadSeq != 20 {
		t.Fatalf("bob's cursor after replay = %d", m.ReadSeq)
	}
	if h, _ := s.Conversation(ctx, "c1"); h.LastSeq != 24 {
		t.Fatalf("last seq after replay = %d", h.LastSeq)
	}
	if cs, _ := s.UserConversations(ctx, "carol"); len(cs) != 0 {
		t.Fatalf("carol still lists c1 after replay: %+v", cs)
	}
}

func testSeparate(t *testing.T, s store.Store) {
	// Ids that share prefixes must not bleed into each other's ranges.
	a := Events("c1", "alice", []string{"bob"}, 3)
	b := Events("c10", "alice", []string{"bob"}, 5)
	mustAppend(t, s, append(a, b...))
	checkRange(t, s, "c1", store.Range{Limit: 100}, seqRange(1, 4), false)
	checkRange(t, s, "c1", store.Range{Before: 100, Limit: 100}, seqRange(1, 4), false)
	checkRange(t, s, "c10", store.Range{Limit: 100}, seqRange(1, 6), false)
	if ms, _ := s.Members(ctx, "c1"); len(ms) != 2 {
		t.Fatalf("Members(c1) = %v", users(ms))
	}
}

// testPaging pages through a long conversation (longer than several of any
// implementation's partitions, e.g. Cassandra's buckets of 256 seqs) in
// both directions, with page sizes that do and do not divide partition
// boundaries.
func testPaging(t *testing.T, s store.Store) {
	const n = 700 // seqs 1..700
	evs := Events("long", "alice", []string{"bob"}, n-1)
	for i := 0; i < len(evs); i += 100 {
		mustAppend(t, s, evs[i:min(i+100, len(evs))])
	}
	for _, limit := range []int{1, 7, 100, 255, 256, 257, store.MaxRangeLimit} {
		// Forward from the start.
		var got []int64
		after := int64(0)
		for {
			page, more, err := s.Events(ctx, "long", store.Range{After: after, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit || (more && len(page) != limit) {
				t.Fatalf("limit %d after %d: %d events, more=%v", limit, after, len(page), more)
			}
			got = append(got, seqs(page)...)
			if !more {
				break
			}
			after = page[len(page)-1].Seq
		}
		if !slices.Equal(got, seqRange(1, n)) {
			t.Fatalf("limit %d: forward pages gave %d events, want 1..%d in order", limit, len(got), n)
		}
		// Backward from the end.
		got = nil
		before := int64(n + 1)
		for {
			page, more, err := s.Events(ctx, "long", store.Range{Before: before, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit || (more && len(page) != limit) {
				t.Fatalf("limit %d before %d: %d events, more=%v", limit, before, len(page), more)
			}
			got = append(seqs(page), got...)
			if !more {
				break
			}
			before = page[0].Seq
		}
		if !slices.Equal(got, seqRange(1, n)) {
			t.Fatalf("limit %d: backward pages gave %d events, want 1..%d in order", limit, len(got), n)
		}
	}
	// Ranges that start or end right at partition edges.
	for _, r := range []struct{ after, before int64 }{{255, 0}, {256, 0}, {0, 257}, {0, 256}, {511, 0}, {0, 513}} {
		want := seqRange(r.after+1, min(r.after+10, n))
		if r.before > 0 {
			want = seqRange(r.before-10, r.before-1)
		}
		checkRange(t, s, "long", store.Range{After: r.after, Before: r.before, Limit: 10}, want, true)
	}
}

// testCountMessages: unread counts skip other event types and the user's
// own messages, across buckets, and stop at max.
func testCountMessages(t *testing.T, s store.Store) {
	// 600 messages alternating alice, bob, carol, then a read and a member
	// change, which are not messages.
	evs := Events("c", "alice", []string{"bob", "carol"}, 600)
	evs = append(evs, readEvent("c", 602, "bob", 601), memberEvent("c", 603, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, "alice", "dave"))
	mustAppend(t, s, evs)
	want := func(after, upTo int64, except string, max, n int) {
		t.Helper()
		got, err := s.CountMessages(ctx, "c", after, upTo, except, max)
		if err != nil || got != n {
			t.Fatalf("CountMessages(after %d, up to %d, except %s, max %d) = %d, %v; want %d", after, upTo, except, max, got, err, n)
		}
	}
	want(0, 603, "", 10000, 600)    // every message, none of the rest
	want(0, 603, "bob", 10000, 400) // not bob's own
	want(1, 4, "alice", 10000, 2)   // seqs 2 (alice), 3 (bob), 4 (carol)
	want(300, 603, "", 10000, 301)  // across bucket boundaries
	want(0, 603, "", 50, 50)        // stops at max
	want(601, 603, "", 10, 0)       // nothing but the read and member change
	want(603, 603, "", 10, 0)
	if n, err := s.CountMessages(ctx, "nowhere", 0, 10, "", 10); err != nil || n != 0 {
		t.Fatalf("an unknown conversation: %d, %v", n, err)
	}
}

// testRevoke: after a revoke, the message and its edits are served without
// a body, in both directions and after a replay; other messages keep theirs.
func testRevoke(t *testing.T, s store.Store) {
	evs := Events("c", "alice", []string{"bob"}, 1) // created, message 2 by alice
	evs = append(evs,
		&parleyv1.Event{Conv: "c", Seq: 3, Type: parleyv1.EventType_EVENT_TYPE_EDIT, MsgId: "e3", From: "alice", Ts: 3, Target: 2, Body: []byte(`"edited"`)},
		&parleyv1.Event{Conv: "c", Seq: 4, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m4", From: "bob", Ts: 4, Kind: "text", Body: []byte(`"kept"`)},
	)
	mustAppend(t, s, evs)
	check := func(wantRevoked bool) {
		t.Helper()
		for _, r := range []store.Range{{After: 0, Limit: 10}, {Before: 100, Limit: 10}} {
			got, _, err := s.Events(ctx, "c", r)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range got {
				hidden := len(ev.Body) == 0
				switch ev.Seq {
				case 2, 3:
					if hidden != wantRevoked {
						t.Fatalf("range %+v: seq %d body %q; revoked %v", r, ev.Seq, ev.Body, wantRevoked)
					}
				case 4:
					if hidden {
						t.Fatalf("range %+v: seq 4 lost its body", r)
					}
				}
			}
		}
	}
	check(false)
	revoke := &parleyv1.Event{Conv: "c", Seq: 5, Type: parleyv1.EventType_EVENT_TYPE_REVOKE, MsgId: "r5", From: "alice", Ts: 5, Target: 2}
	mustAppend(t, s, []*parleyv1.Event{revoke})
	check(true)
	mustAppend(t, s, append(evs, revoke)) // a replay of the whole log
	check(true)
}

// testLargest appends events at the limits the events topic allows
// (schema.CheckEvent): bodies of 64 KiB, alone and in a batch, 256-byte
// titles, ids of their longest. A store must take every event that passes
// those checks (the writer retries a refused batch for ever).
func testLargest(t *testing.T, s store.Store) {
	const maxBody = 64 << 10
	body := []byte(`"` + strings.Repeat("b", maxBody-2) + `"`)
	user := strings.Repeat("u", 64)
	conv := strings.Repeat("c", 128)
	evs := []*parleyv1.Event{{Conv: conv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: strings.Repeat("m", 64), From: user,
		Ts: 1, ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: strings.Repeat("t", 256), Members: []string{user, "other"}}}
	for seq := int64(2); seq <= 4; seq++ {
		evs = append(evs, &parleyv1.Event{Conv: conv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: fmt.Sprint("m", seq),
			Cmid: strings.Repeat("x", 64), From: user, Ts: seq, Kind: strings.Repeat("k", 32), Body: body})
	}
	mustAppend(t, s, evs[:2]) // one large event alone
	mustAppend(t, s, evs)     // and several, replayed
	got, _, err := s.Events(ctx, conv, store.Range{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || len(got[3].Body) != maxBody || got[0].Title != evs[0].Title {
		t.Fatalf("got %d events (last body %d bytes)", len(got), len(got[len(got)-1].Body))
	}
}
