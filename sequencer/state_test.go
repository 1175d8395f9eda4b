package sequencer

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"weak"

	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

var testRules = rules{windowMinAgeMs: 1000, windowMinEntries: 64, maxMembers: 5}

// g1 is a group id (groups have KSUIDs).
var g1 = ksuid.New().String()

type harness struct {
	t   *testing.T
	p   *partition
	n   int
	now int64
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, p: newPartition(testRules), now: 1_000_000}
}

func (h *harness) cmd(conv, from, cmid string, body any) *parleyv1.Command {
	h.n++
	c := &parleyv1.Command{Conv: conv, From: from, Cmid: cmid, MsgId: fmt.Sprintf("m%05d", h.n)}
	var msg proto.Message
	if body != nil {
		msg = body.(proto.Message)
	}
	if _, err := schema.SetBody(c, msg); err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) do(conv, from, cmid string, body any) (*parleyv1.Event, *parleyv1.Outcome) {
	return h.p.apply(h.cmd(conv, from, cmid, body), h.now)
}

func (h *harness) ok(conv, from, cmid string, body any) *parleyv1.Event {
	h.t.Helper()
	ev, out := h.do(conv, from, cmid, body)
	if out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED || ev == nil {
		h.t.Fatalf("%s by %s: %v %v %q", conv, from, out.Status, out.Reason, out.Message)
	}
	return ev
}

func (h *harness) rejected(reason parleyv1.Reason, conv, from, cmid string, body any) {
	h.t.Helper()
	ev, out := h.do(conv, from, cmid, body)
	if ev != nil || out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED || out.Reason != reason {
		h.t.Fatalf("%s by %s: got %v %v (%q), want rejected %v", conv, from, out.Status, out.Reason, out.Message, reason)
	}
	if schema.ErrorCode(reason) == schema.CodeInternal {
		h.t.Fatalf("reason %v has no client error code", reason)
	}
}

func (h *harness) status(want parleyv1.OutcomeStatus, conv, from, cmid string, body any) *parleyv1.Outcome {
	h.t.Helper()
	ev, out := h.do(conv, from, cmid, body)
	if ev != nil || out.Status != want {
		h.t.Fatalf("%s by %s: got %v %v (%q), want %v", conv, from, out.Status, out.Reason, out.Message, want)
	}
	return out
}

func send(text string) *parleyv1.Send {
	return &parleyv1.Send{Kind: "text", Body: []byte(fmt.Sprintf("%q", text))}
}

func group(members ...string) *parleyv1.Create {
	return &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: members, Title: "g"}
}

func TestSeqsAndDedup(t *testing.T) {
	h := newHarness(t)
	if ev := h.ok(g1, "alice", "", group("bob")); ev.Seq != 1 || !slices.Equal(ev.Members, []string{"alice", "bob"}) {
		t.Fatalf("created = %v", ev)
	}
	a := h.ok(g1, "alice", "a1", send("hi"))
	b := h.ok(g1, "bob", "a1", send("same cmid, other sender")) // cmids are per sender
	if a.Seq != 2 || b.Seq != 3 {
		t.Fatalf("seqs %d %d", a.Seq, b.Seq)
	}
	out := h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, g1, "alice", "a1", send("retry"))
	if out.Event.Seq != 2 || out.Event.MsgId != a.MsgId {
		t.Fatalf("duplicate answered %v, want the original %v", out.Event, a)
	}
	if c := h.ok(g1, "alice", "a2", send("next")); c.Seq != 4 {
		t.Fatalf("a duplicate took a seq: next is %d", c.Seq)
	}
}

func TestValidation(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob"))
	M := parleyv1.Reason_REASON_MALFORMED
	h.rejected(M, g1, "alice", "", send("no cmid"))
	h.rejected(M, "g/1", "alice", "c", send("bad conv"))
	h.rejected(M, "not-a-ksuid", "alice", "", group("bob"))
	h.rejected(M, g1, "al ice", "c", send("bad sender"))
	h.rejected(M, g1, "alice", "c", &parleyv1.Send{Kind: "text", Body: []byte("{not json")})
	h.rejected(M, g1, "alice", "c", &parleyv1.Send{Kind: "", Body: []byte("1")})
	h.rejected(M, g1, "alice", "c", nil)
	h.rejected(parleyv1.Reason_REASON_TOO_LARGE, g1, "alice", "c", &parleyv1.Send{Kind: "text", Body: make([]byte, schema.MaxBodyLen+1)})
	h.rejected(parleyv1.Reason_REASON_CONV_NOT_FOUND, "nope", "alice", "c", send("x"))
	h.rejected(parleyv1.Reason_REASON_NOT_MEMBER, g1, "mallory", "c", send("x"))
	h.rejected(parleyv1.Reason_REASON_NOT_MEMBER, g1, "mallory", "", &parleyv1.Read{Seq: 1})
	h.rejected(parleyv1.Reason_REASON_CONV_EXISTS, g1, "mallory", "", group("alice"))
	if ev := h.ok(g1, "alice", "ok", send("still fine")); ev.Seq != 2 {
		t.Fatalf("rejections took seqs: %d", ev.Seq)
	}
}

func TestEditRevoke(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob", "carol"))
	m := h.ok(g1, "bob", "b1", send("bob's"))
	h.rejected(parleyv1.Reason_REASON_NOT_AUTHOR, g1, "carol", "c1", &parleyv1.Edit{Target: m.Seq, Body: []byte(`"x"`)})
	h.rejected(parleyv1.Reason_REASON_NOT_AUTHOR, g1, "alice", "a1", &parleyv1.Edit{Target: m.Seq, Body: []byte(`"x"`)}) // the owner may not edit
	h.rejected(parleyv1.Reason_REASON_TARGET_NOT_FOUND, g1, "bob", "b2", &parleyv1.Edit{Target: 1, Body: []byte(`"x"`)})
	h.rejected(parleyv1.Reason_REASON_TARGET_NOT_FOUND, g1, "bob", "b2", &parleyv1.Edit{Target: 99, Body: []byte(`"x"`)})
	e := h.ok(g1, "bob", "b2", &parleyv1.Edit{Target: m.Seq, Body: []byte(`"edited"`)})
	if e.Type != parleyv1.EventType_EVENT_TYPE_EDIT || e.Target != m.Seq {
		t.Fatalf("edit event %v", e)
	}
	h.rejected(parleyv1.Reason_REASON_TARGET_NOT_FOUND, g1, "bob", "b3", &parleyv1.Edit{Target: e.Seq, Body: []byte(`"edit of edit"`)})
	h.rejected(parleyv1.Reason_REASON_NOT_AUTHOR, g1, "carol", "c2", &parleyv1.Revoke{Target: m.Seq})
	h.ok(g1, "alice", "a2", &parleyv1.Revoke{Target: m.Seq}) // the group owner may revoke
	h.rejected(parleyv1.Reason_REASON_TARGET_REVOKED, g1, "bob", "b4", &parleyv1.Edit{Target: m.Seq, Body: []byte(`"late"`)})
	h.rejected(parleyv1.Reason_REASON_TARGET_REVOKED, g1, "bob", "b5", &parleyv1.Revoke{Target: m.Seq})
}

func TestMembersRules(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob"))
	h.rejected(parleyv1.Reason_REASON_NOT_OWNER, g1, "bob", "", &parleyv1.AddMembers{Users: []string{"carol"}})
	h.rejected(parleyv1.Reason_REASON_NOT_OWNER, g1, "bob", "", &parleyv1.RemoveMembers{Users: []string{"alice"}})
	add := h.ok(g1, "alice", "", &parleyv1.AddMembers{Users: []string{"carol", "bob", "carol", "dave"}})
	if !slices.Equal(add.Members, []string{"carol", "dave"}) {
		t.Fatalf("added %v", add.Members)
	}
	h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED, g1, "alice", "", &parleyv1.AddMembers{Users: []string{"bob"}})
	h.rejected(parleyv1.Reason_REASON_TOO_MANY_MEMBERS, g1, "alice", "", &parleyv1.AddMembers{Users: []string{"e1", "e2"}})
	h.ok(g1, "carol", "", &parleyv1.RemoveMembers{Users: []string{"carol", "carol"}}) // leaving
	h.rejected(parleyv1.Reason_REASON_NOT_MEMBER, g1, "carol", "c", send("gone"))
	h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED, g1, "alice", "", &parleyv1.RemoveMembers{Users: []string{"carol"}})
	// The owner leaves: bob (joined at seq 1) takes over before dave (joined later).
	h.ok(g1, "alice", "", &parleyv1.RemoveMembers{Users: []string{"alice"}})
	h.ok(g1, "bob", "", &parleyv1.RemoveMembers{Users: []string{"dave"}})
	h.rejected(parleyv1.Reason_REASON_NOT_MEMBER, g1, "alice", "", &parleyv1.AddMembers{Users: []string{"alice"}})
}

func TestDirect(t *testing.T) {
	h := newHarness(t)
	id := schema.DirectConvID("alice", "bob")
	if id != schema.DirectConvID("bob", "alice") {
		t.Fatal("direct id depends on order")
	}
	direct := func(other string) *parleyv1.Create {
		return &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{other}}
	}
	h.rejected(parleyv1.Reason_REASON_MALFORMED, "d.wrong", "alice", "", direct("bob"))
	h.rejected(parleyv1.Reason_REASON_MALFORMED, id, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{"bob", "carol"}})
	created := h.ok(id, "alice", "", direct("bob"))
	out := h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, id, "bob", "", direct("alice"))
	if out.Event.Seq != 1 || out.Event.MsgId != created.MsgId {
		t.Fatalf("second create answered %v", out.Event)
	}
	h.rejected(parleyv1.Reason_REASON_DIRECT_FIXED, id, "alice", "", &parleyv1.AddMembers{Users: []string{"carol"}})
	h.rejected(parleyv1.Reason_REASON_DIRECT_FIXED, id, "alice", "", &parleyv1.RemoveMembers{Users: []string{"alice"}})
	h.ok(id, "bob", "b1", send("hey"))
}

func TestReadCursor(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob"))
	for i := range 5 {
		h.ok(g1, "alice", fmt.Sprint(i), send("m"))
	}
	// Bob joined at seq 1: his cursor starts there.
	h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED, g1, "bob", "", &parleyv1.Read{Seq: 1})
	r := h.ok(g1, "bob", "", &parleyv1.Read{Seq: 4})
	if r.Type != parleyv1.EventType_EVENT_TYPE_READ || r.Target != 4 || r.Seq != 7 {
		t.Fatalf("read event %v", r)
	}
	h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED, g1, "bob", "", &parleyv1.Read{Seq: 3})
	h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED, g1, "bob", "", &parleyv1.Read{Seq: 4})
	h.rejected(parleyv1.Reason_REASON_TARGET_NOT_FOUND, g1, "bob", "", &parleyv1.Read{Seq: 8})
	h.ok(g1, "bob", "", &parleyv1.Read{Seq: 7})
}

// TestWindow checks that the window keeps at least windowMinEntries entries
// and everything younger than windowMinAge, and that a changelog round trip
// restores exactly the same decisions.
func TestWindow(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob"))
	var records [][2][]byte
	emit := func(k, v []byte) { records = append(records, [2][]byte{k, v}) }
	for i := range 400 {
		if i == 200 {
			h.now += testRules.windowMinAgeMs // the first 200 are now old
		}
		h.ok(g1, "alice", fmt.Sprintf("c%d", i), send("m"))
		if i%7 == 0 {
			if err := h.p.flush(emit); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := h.p.flush(emit); err != nil {
		t.Fatal(err)
	}
	c := h.p.convs[g1]
	// 200 young entries must all stay; of the old ones, at least enough to
	// keep windowMinEntries... here the young ones alone exceed it.
	if c.entries < 200 || c.entries > 200+chunkSize {
		t.Fatalf("window holds %d entries", c.entries)
	}
	young := h.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, g1, "alice", "c200", send("retry"))
	h.rejected(parleyv1.Reason_REASON_TARGET_EXPIRED, g1, "alice", "e1", &parleyv1.Edit{Target: 2, Body: []byte("1")})
	// An expired cmid is new again: that is the documented window.
	h.ok(g1, "alice", "c0", send("reused after the window"))

	// Restore from the changelog (compaction keeps the last value per key).
	last := make(map[string][]byte)
	var order []string
	for _, r := range records {
		if _, ok := last[string(r[0])]; !ok {
			order = append(order, string(r[0]))
		}
		last[string(r[0])] = r[1]
	}
	rs := newRestorer()
	for _, k := range order {
		if err := rs.add(k, last[k]); err != nil {
			t.Fatal(err)
		}
	}
	p2, err := rs.partition(testRules)
	if err != nil {
		t.Fatal(err)
	}
	c2 := p2.convs[g1]
	if c2.head.LastSeq != 401 || c2.entries != c.entries-1 {
		t.Fatalf("restored last seq %d entries %d; had %d entries before the reuse", c2.head.LastSeq, c2.entries, c.entries)
	}
	h2 := &harness{t: t, p: p2, now: h.now, n: h.n}
	out := h2.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, g1, "alice", "c200", send("retry"))
	if !proto.Equal(out.Event, young.Event) {
		t.Fatalf("restored duplicate %v, want %v", out.Event, young.Event)
	}
	if ev := h2.ok(g1, "bob", "b", send("after restore")); ev.Seq != 402 {
		t.Fatalf("after restore seq %d, want 402", ev.Seq)
	}
}

// restored is the partition a changelog of one conversation's head, members
// and chunks restores to.
func restored(t *testing.T, head *parleyv1.ConvState, members map[string]*parleyv1.MemberState, chunks ...*parleyv1.MessageChunk) *partition {
	t.Helper()
	rs := newRestorer()
	add := func(key string, m proto.Message) {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.add(key, v); err != nil {
			t.Fatal(err)
		}
	}
	add(headKey(head.Conv), head)
	for u, m := range members {
		add(memberKey(head.Conv, u), m)
	}
	for _, ch := range chunks {
		add(chunkKey(head.Conv, ch.Chunk), ch)
	}
	p, err := rs.partition(testRules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRestoreLongPending: a head with more pending entries than chunkSize,
// as a changelog written with larger chunks leaves it, is restored, and the
// next entry seals them all into one chunk.
func TestRestoreLongPending(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob"))
	for i := range 3 * chunkSize {
		h.ok(g1, "alice", fmt.Sprintf("c%d", i), send("m"))
	}
	c := h.p.convs[g1]
	head := headProto(c)
	head.Pending, head.FirstChunk, head.NextChunk = windowEntries(c), 0, 0
	p := restored(t, head, c.members)
	h2 := &harness{t: t, p: p, now: h.now, n: h.n}
	h2.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, g1, "alice", "c0", send("retry"))
	h2.ok(g1, "alice", "after", send("m"))
	c2 := p.convs[g1]
	if len(c2.chunks) != 1 || len(c2.chunks[0].entries) != 3*chunkSize+1 || c2.pending != nil || c2.head.NextChunk != 1 {
		t.Fatalf("%d chunks, pending %v, next chunk %d; want the %d entries in chunk 0", len(c2.chunks), c2.pending, c2.head.NextChunk, 3*chunkSize+1)
	}
	var keys []string
	if err := p.flush(func(k, _ []byte) { keys = append(keys, string(k)) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys, chunkKey(g1, 0)) {
		t.Fatalf("flushed %v, want the chunk %s", keys, chunkKey(g1, 0))
	}
	h2.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, g1, "alice", "c1", send("retry"))
}

// TestRestoreOldChunks: a changelog written with chunks of 32 entries
// restores, its big chunk answers retries and edits like any other, and it
// leaves the window whole when the window has passed it.
func TestRestoreOldChunks(t *testing.T) {
	h := newHarness(t)
	h.ok(g1, "alice", "", group("bob"))
	for i := range 40 { // seqs 2..41
		h.ok(g1, "alice", fmt.Sprintf("c%d", i), send("m"))
	}
	c := h.p.convs[g1]
	all := windowEntries(c)
	head := headProto(c)
	head.FirstChunk, head.NextChunk, head.Pending = 0, 1, all[32:]
	p := restored(t, head, c.members, &parleyv1.MessageChunk{Chunk: 0, Entries: all[:32]})
	h2 := &harness{t: t, p: p, now: h.now, n: h.n}
	h2.status(parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, g1, "alice", "c5", send("retry"))
	h2.ok(g1, "alice", "e1", &parleyv1.Edit{Target: 10, Body: []byte(`"fixed"`)})

	// The big chunk leaves once the entries after it reach the minimum
	// (64) and its newest is old enough; the one sealed after it stays.
	h2.now += testRules.windowMinAgeMs
	c2 := p.convs[g1]
	for i := 0; c2.chunks[0].n == 0; i++ {
		if i == 100 {
			t.Fatalf("chunk 0 still in the window with %d entries", c2.entries)
		}
		h2.ok(g1, "alice", fmt.Sprintf("d%d", i), send("m"))
	}
	if c2.entries < testRules.windowMinEntries || c2.chunks[0].n != 1 || len(c2.chunks[0].entries) != 9 {
		t.Fatalf("window of %d entries starting with chunk %d of %d entries", c2.entries, c2.chunks[0].n, len(c2.chunks[0].entries))
	}
	h2.rejected(parleyv1.Reason_REASON_TARGET_EXPIRED, g1, "alice", "e2", &parleyv1.Edit{Target: 10, Body: []byte(`"late"`)})
	h2.ok(g1, "alice", "e3", &parleyv1.Edit{Target: 40, Body: []byte(`"in time"`)})
	h2.ok(g1, "alice", "c5", send("a cmid that left the window is new again"))
	tombstoned := false
	if err := p.flush(func(k, v []byte) { tombstoned = tombstoned || (string(k) == chunkKey(g1, 0) && v == nil) }); err != nil {
		t.Fatal(err)
	}
	if !tombstoned {
		t.Fatal("chunk 0 left the window without a tombstone")
	}
}

func TestDirectIDCannotBeTaken(t *testing.T) {
	h := newHarness(t)
	id := schema.DirectConvID("alice", "bob")
	h.rejected(parleyv1.Reason_REASON_MALFORMED, id, "mallory", "", group("alice", "bob"))
	h.ok(id, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{"bob"}})
}

func TestSameCreateTwice(t *testing.T) {
	h := newHarness(t)
	c := h.cmd(g1, "alice", "", group("bob"))
	if _, out := h.p.apply(c, h.now); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
		t.Fatalf("create: %v", out)
	}
	if _, out := h.p.apply(c, h.now); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE || out.Event.Seq != 1 {
		t.Fatalf("the same create again: %v, want a duplicate of seq 1", out)
	}
}

// TestRejectionsAreSmall: whatever a command holds, its outcome stays
// small, so a batch of outcomes always fits in one record.
func TestRejectionsAreSmall(t *testing.T) {
	h := newHarness(t)
	huge := strings.Repeat("\x01", 100_000)
	for _, c := range []*parleyv1.Command{
		h.cmd(huge, "alice", "c", send("x")),
		h.cmd(g1, huge, "c", send("x")),
		h.cmd(g1, "alice", "c", &parleyv1.Send{Kind: huge, Body: []byte("1")}),
		h.cmd(g1, "alice", "", &parleyv1.AddMembers{Users: []string{huge}}),
		{Conv: g1, From: "alice", MsgId: huge, Body: &parleyv1.Command_Read{Read: &parleyv1.Read{Seq: 1}}},
	} {
		_, out := h.p.apply(c, h.now)
		if out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED || proto.Size(out) > 400 {
			t.Errorf("outcome %v %v is %d bytes", out.Status, out.Reason, proto.Size(out))
		}
	}
}

// TestLeftChunkReleased: a chunk that leaves the window, and its entries,
// are garbage at once: the window's array of chunks does not keep them
// until its next move.
func TestLeftChunkReleased(t *testing.T) {
	h := newHarness(t)
	h.p.rules.windowMinAgeMs = 0
	h.ok(g1, "alice", "", group("bob"))
	c := h.p.convs[g1]
	for i := 0; len(c.chunks) == 0; i++ {
		h.ok(g1, "alice", fmt.Sprintf("a%d", i), send("m"))
	}
	first, entry := weak.Make(c.chunks[0]), weak.Make(&c.chunks[0].entries[0])
	for i := 0; c.head.FirstChunk == 0; i++ {
		h.ok(g1, "bob", fmt.Sprintf("b%d", i), send("m"))
	}
	if err := h.p.flush(func(_, _ []byte) {}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if first.Value() != nil || entry.Value() != nil {
		t.Fatalf("the chunk that left the window (chunk %d now first) is still reachable: chunk %v, entry %v",
			c.head.FirstChunk, first.Value() != nil, entry.Value() != nil)
	}
}
