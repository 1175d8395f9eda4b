package sequencer

import (
	"cmp"
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"github.com/segmentio/ksuid"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// chunkSize is the number of window entries per changelog chunk record.
// The entries not yet in a chunk ride in the conversation's head, which is
// written again in every transaction that touches the conversation: with
// k of the conversation's commands in a transaction, each costs the
// changelog about chunkSize/(2k) entries besides its own, and k is near 1
// for most conversations short of saturation. Eight keeps that near four
// entries while a chunk record still carries several times its key and
// framing. Chunks written with another size stay valid (see record).
const chunkSize = 8

// rules are the limits the sequencer enforces; see Config.
type rules struct {
	windowMinAgeMs   int64
	windowMinEntries int
	maxMembers       int
}

// convState is everything the sequencer knows about one conversation. The
// dedup/edit window is a run of entries, oldest first: the full chunks, then
// the pending entries (see window.go). head.Pending is always empty: the
// changelog's head record takes pending's entries (headRecord).
type convState struct {
	head    *parleyv1.ConvState
	members map[string]*parleyv1.MemberState
	chunks  []*winChunk
	pending *winChunk // nil: none
	cmids   cmidIndex
	revoked map[int64]bool
	entries int // total entries in the window
	idBytes int // total bytes of their ids

	// For the partition's cache: the transaction that last used it, the
	// bytes it was last counted at (see estimate), and whether it changed
	// since the state store last had it. What the store has: its head's
	// chunks storedFirst..storedNext-1 (none for a conversation it never
	// had), and its members as they were except those in staleMembers, so
	// that writing it back writes only what changed.
	used         uint64
	cost         int64
	unstored     bool
	storedFirst  int64
	storedNext   int64
	staleMembers map[string]struct{}

	// Changes not yet written to the changelog.
	dirty         bool
	dirtyMembers  map[string]bool // user -> still a member (false: tombstone)
	newChunks     []*winChunk
	droppedChunks []int64
}

func newConvState(head *parleyv1.ConvState) *convState {
	return &convState{
		head:    head,
		members: make(map[string]*parleyv1.MemberState),
		revoked: make(map[int64]bool),
	}
}

// index adds the entry e, which is in the window, to the lookups; k is its
// sender and cmid (see indexCmid).
func (c *convState) index(e *winEntry, k cmidKey) {
	c.entries++
	c.idBytes += e.idBytes()
	if k.cmid != "" {
		c.indexCmid(e.seq, k)
	}
	if e.typ == parleyv1.EventType_EVENT_TYPE_REVOKE {
		c.revoked[e.target] = true
	}
}

// unindex takes e, which left the window, out of the lookups; the cmid
// index lets go of it when the window advances (see cmidIndex).
func (c *convState) unindex(e *winEntry) {
	c.entries--
	c.idBytes -= e.idBytes()
	if e.typ == parleyv1.EventType_EVENT_TYPE_REVOKE {
		delete(c.revoked, e.target)
	}
}

// windowStart is the lowest seq the window still covers: targets below it
// are too old to edit or revoke.
func (c *convState) windowStart() int64 {
	if c.head.FirstChunk == 0 {
		return 1 // nothing ever left the window
	}
	if len(c.chunks) > 0 {
		return c.chunks[0].first()
	}
	if c.pending != nil {
		return c.pending.first()
	}
	return c.head.LastSeq + 1
}

// entry returns the window entry with the given seq.
func (c *convState) entry(seq int64) (winRef, bool) {
	if p := c.pending; p != nil && seq >= p.first() {
		return p.find(seq)
	}
	i := sort.Search(len(c.chunks), func(i int) bool { return c.chunks[i].last() >= seq })
	if i < len(c.chunks) {
		return c.chunks[i].find(seq)
	}
	return winRef{}, false
}

// record adds the entry of ev, a sequenced command's event with a cmid,
// seals a full chunk, and lets old chunks leave the window. ev's ids are
// copied.
func (c *convState) record(ev *parleyv1.Event, r rules, now int64) {
	p := c.pending
	if p == nil {
		p = newWinChunk(chunkSize, len(ev.MsgId)+len(ev.Cmid)+len(ev.From))
		c.pending = p
	}
	p.add(ev.Seq, ev.Type, ev.MsgId, ev.Cmid, ev.From, ev.Ts, ev.Target)
	c.index(&p.entries[len(p.entries)-1], cmidKey{ev.From, ev.Cmid})
	// At least: a head restored from a changelog written with larger
	// chunks holds more pending entries, and seals them all at its next
	// entry.
	if len(p.entries) >= chunkSize {
		p.n = c.head.NextChunk
		c.head.NextChunk++
		c.pending = nil
		c.chunks = append(c.chunks, p)
		c.newChunks = append(c.newChunks, p)
	}
	// A chunk leaves only when both the entries after it are enough and its
	// newest entry is old enough: the window is at least windowMinEntries
	// and at least windowMinAge.
	left := false
	for len(c.chunks) > 0 {
		ch := c.chunks[0]
		newest := &ch.entries[len(ch.entries)-1]
		if c.entries-len(ch.entries) < r.windowMinEntries || now-newest.ts < r.windowMinAgeMs {
			break
		}
		left = true
		for i := range ch.entries {
			c.unindex(&ch.entries[i])
		}
		// The slot is cleared, or the array would keep the chunk and its
		// entries until the next append moves the window's chunks.
		c.chunks[0] = nil
		c.chunks = c.chunks[1:]
		c.head.FirstChunk = ch.n + 1
		c.droppedChunks = append(c.droppedChunks, ch.n)
		// A chunk sealed and dropped in one transaction is never written.
		if i := slices.Index(c.newChunks, ch); i >= 0 {
			c.newChunks = slices.Delete(c.newChunks, i, i+1)
		}
	}
	if left {
		c.cmids.advance(c.windowStart())
	}
}

// partition is the state of one assigned commands partition. With a store,
// convs is a cache: a conversation is loaded from the store when a command
// needs it (ensure), and the least recently used ones are written back to
// the store and leave when the cache is over its budget (evict); every
// changed one is written to it when the store lags the changelog too far
// (sync). Without one (unit tests of the rules) every conversation stays
// in convs.
type partition struct {
	convs map[string]*convState
	dirty []*convState // touched since the last flush, in first-touch order
	rules rules
	// While decidePartition runs: where apply builds its events and the
	// outcomes of sequenced commands, instead of allocating each.
	scratch *decideScratch

	id    int32
	store *stateStore
	// next is the commands offset after the last command applied to this
	// state, 0 until one is (see applied).
	next  int64
	clock uint64 // transactions flushed
	bytes int64  // estimated memory of convs
	loads int64  // conversations loaded from the store
}

func newPartition(r rules) *partition {
	return &partition{convs: make(map[string]*convState), rules: r}
}

// applied returns the offset after the last command applied to p, and
// whether one was: p's state holds every command of its partition below
// that offset. p may be nil (no state in memory).
func (p *partition) applied() (int64, bool) {
	if p == nil || p.next == 0 {
		return 0, false
	}
	return p.next, true
}

// newStoredPartition is partition id of st, whose state st holds.
func newStoredPartition(r rules, st *stateStore, id int32) *partition {
	p := newPartition(r)
	p.store, p.id = st, id
	return p
}

// ensure makes sure conv's state is in convs if the store has it, and
// marks it used.
func (p *partition) ensure(conv string) error {
	if c := p.convs[conv]; c != nil {
		c.used = p.clock
		return nil
	}
	if p.store == nil {
		return nil
	}
	rs := newRestorer()
	if err := p.store.loadConv(p.id, conv, rs.add); err != nil {
		return fmt.Errorf("loading the state of %s: %w", conv, err)
	}
	h := rs.heads[conv]
	if h == nil {
		return nil // no such conversation
	}
	c, err := rs.conv(h)
	if err != nil {
		return err
	}
	p.loads++
	c.used = p.clock
	c.storedFirst, c.storedNext = h.FirstChunk, h.NextChunk
	c.cost = c.estimate()
	p.bytes += c.cost
	p.convs[conv] = c
	return nil
}

// Estimated memory of a conversation's state, for the cache's budget. A
// window entry takes entryBytes besides its ids: measured on the heap
// with its chunk's share and its slots in the dedup index, in 100 windows
// of 1,000 entries after 1,000 and 2,000 more sends each (the cmid index
// then holds two generations of slots), 100 bytes an entry with 38 bytes
// of ids; 62 in a window just restored. A member and the rest of a
// conversation are rounded up from their structures.
const (
	entryBytes  = 64
	memberBytes = 160
	convBytes   = 640
)

func (c *convState) estimate() int64 {
	return convBytes + int64(c.entries)*entryBytes + int64(c.idBytes) + int64(len(c.members))*memberBytes
}

// evict brings the cache's estimate to three quarters of budget if it is
// over budget, dropping the least recently used conversations; what
// changed in one since the store last had it is written to the store
// first. Its state must be committed to the changelog: call it after the
// transaction commits.
func (p *partition) evict(budget int64) error {
	if p.store == nil || p.bytes <= budget {
		return nil
	}
	byUse := make([]*convState, 0, len(p.convs))
	for _, c := range p.convs {
		byUse = append(byUse, c)
	}
	slices.SortFunc(byUse, func(a, b *convState) int { return cmp.Compare(a.used, b.used) })
	var gone []*convState
	for _, c := range byUse {
		if p.bytes <= budget/4*3 {
			break
		}
		gone = append(gone, c)
		p.bytes -= c.cost
	}
	if err := p.writeBack(gone); err != nil {
		return err
	}
	for _, c := range gone {
		delete(p.convs, c.head.Conv)
	}
	return nil
}

// sync writes every conversation in memory that changed since the store
// last had it to the store: then the store holds the partition's whole
// committed state. Call it after the transaction commits.
func (p *partition) sync() error {
	if p.store == nil {
		return nil
	}
	var changed []*convState
	for _, c := range p.convs {
		if c.unstored {
			changed = append(changed, c)
		}
	}
	return p.writeBack(changed)
}

// writeBack writes what changed in cs since the store last had them to
// the store, in one batch.
func (p *partition) writeBack(cs []*convState) error {
	b := p.store.db.NewBatch()
	defer b.Close()
	for _, c := range cs {
		if c.unstored {
			if err := p.store.put(b, p.id, c); err != nil {
				return err
			}
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	for _, c := range cs {
		c.unstored, c.staleMembers = false, nil
		c.storedFirst, c.storedNext = c.head.FirstChunk, c.head.NextChunk
	}
	return nil
}

func (p *partition) touch(c *convState) {
	if !c.dirty {
		c.dirty = true
		p.dirty = append(p.dirty, c)
	}
}

func (p *partition) setMember(c *convState, m *parleyv1.MemberState) {
	c.members[m.User] = m
	if c.dirtyMembers == nil {
		c.dirtyMembers = make(map[string]bool)
	}
	c.dirtyMembers[m.User] = true
}

func (p *partition) dropMember(c *convState, user string) {
	delete(c.members, user)
	if c.dirtyMembers == nil {
		c.dirtyMembers = make(map[string]bool)
	}
	c.dirtyMembers[user] = false
}

// reject is the outcome of a refused command. Every value in it that comes
// from the command is bounded (invalid ids are left out, quoted input is
// clipped), so that outcomes stay small whatever a command holds.
func reject(cmd *parleyv1.Command, reason parleyv1.Reason, format string, args ...any) *parleyv1.Outcome {
	o := &parleyv1.Outcome{
		MsgId: cmd.GetMsgId(), Conv: cmd.GetConv(), Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED,
		Reason: reason, Message: fmt.Sprintf(format, args...),
	}
	if len(o.MsgId) > maxMsgIDLen {
		o.MsgId = "" // no connector issued it, so nobody waits for it
	}
	if !schema.ValidConvID(o.Conv) {
		o.Conv = ""
	}
	return o
}

// maxMsgIDLen bounds a command's msg_id (a KSUID is 27 characters).
const maxMsgIDLen = schema.MaxMsgIDLen

// clip bounds a piece of client input quoted in a rejection message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func unchanged(cmd *parleyv1.Command) *parleyv1.Outcome {
	return &parleyv1.Outcome{MsgId: cmd.MsgId, Conv: cmd.Conv, Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED}
}

// sequenced is the outcome of a command that became ev. The outcome's event
// carries identifiers only: a connector needs them to answer its client, and
// a body or member list could make a batch of outcomes too large for one
// record (the event itself is on the events topic).
func sequenced(cmd *parleyv1.Command, ev *parleyv1.Event) *parleyv1.Outcome {
	so := new(sequencedOutcome) // one allocation for both
	fillSequenced(&so.o, &so.e, cmd, ev)
	return &so.o
}

// fillSequenced makes o, with oe, cmd's outcome of ev (see sequenced). o
// and oe are empty.
func fillSequenced(o *parleyv1.Outcome, oe *parleyv1.Event, cmd *parleyv1.Command, ev *parleyv1.Event) {
	oe.Conv, oe.Seq, oe.Type, oe.MsgId, oe.Cmid, oe.From = ev.Conv, ev.Seq, ev.Type, ev.MsgId, ev.Cmid, ev.From
	oe.Ts, oe.Kind, oe.Target, oe.ConvKind, oe.Title = ev.Ts, ev.Kind, ev.Target, ev.ConvKind, ev.Title
	o.MsgId, o.Conv, o.Status, o.Event = cmd.MsgId, cmd.Conv, parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED, oe
}

// duplicate is the outcome of a command that repeats the one that became
// ev (which carries identifiers only).
func duplicate(cmd *parleyv1.Command, ev *parleyv1.Event) *parleyv1.Outcome {
	return &parleyv1.Outcome{MsgId: cmd.MsgId, Conv: ev.Conv, Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE, Event: ev}
}

// validate checks the fields every command needs and those of its body.
func validate(cmd *parleyv1.Command) *parleyv1.Outcome {
	bad := func(format string, args ...any) *parleyv1.Outcome {
		return reject(cmd, parleyv1.Reason_REASON_MALFORMED, format, args...)
	}
	switch {
	case !schema.ValidConvID(cmd.Conv):
		return bad("invalid conversation id %q", clip(cmd.Conv))
	case !schema.ValidUserID(cmd.From):
		return bad("invalid sender %q", clip(cmd.From))
	case cmd.MsgId == "" || len(cmd.MsgId) > maxMsgIDLen:
		return bad("missing or oversized msg_id")
	case cmd.Cmid != "" && !schema.ValidCMID(cmd.Cmid):
		return bad("invalid cmid")
	}
	body := func(b []byte) *parleyv1.Outcome {
		if len(b) > schema.MaxBodyLen {
			return reject(cmd, parleyv1.Reason_REASON_TOO_LARGE, "body is %d bytes, the limit is %d", len(b), schema.MaxBodyLen)
		}
		if len(b) == 0 || !schema.ValidJSON(b) {
			return bad("body is not a JSON value")
		}
		return nil
	}
	needCmid := func() *parleyv1.Outcome {
		if cmd.Cmid == "" {
			return bad("cmid is required")
		}
		return nil
	}
	switch b := cmd.Body.(type) {
	case *parleyv1.Command_Send:
		if o := needCmid(); o != nil {
			return o
		}
		if !schema.ValidKind(b.Send.GetKind()) {
			return bad("invalid message kind %q", clip(b.Send.GetKind()))
		}
		return body(b.Send.GetBody())
	case *parleyv1.Command_Edit:
		if o := needCmid(); o != nil {
			return o
		}
		if b.Edit.GetTarget() < 1 {
			return bad("invalid target %d", b.Edit.GetTarget())
		}
		return body(b.Edit.GetBody())
	case *parleyv1.Command_Revoke:
		if o := needCmid(); o != nil {
			return o
		}
		if b.Revoke.GetTarget() < 1 {
			return bad("invalid target %d", b.Revoke.GetTarget())
		}
	case *parleyv1.Command_Create:
		c := b.Create
		if c.GetKind() != parleyv1.ConvKind_CONV_KIND_DIRECT && c.GetKind() != parleyv1.ConvKind_CONV_KIND_GROUP {
			return bad("unknown conversation kind")
		}
		if len(c.GetTitle()) > schema.MaxTitleLen {
			return bad("title longer than %d bytes", schema.MaxTitleLen)
		}
		for _, u := range c.GetMembers() {
			if !schema.ValidUserID(u) {
				return bad("invalid member %q", clip(u))
			}
		}
	case *parleyv1.Command_AddMembers:
		return validUsers(cmd, b.AddMembers.GetUsers())
	case *parleyv1.Command_RemoveMembers:
		return validUsers(cmd, b.RemoveMembers.GetUsers())
	case *parleyv1.Command_Read:
		if b.Read.GetSeq() < 1 {
			return bad("invalid read seq %d", b.Read.GetSeq())
		}
	default:
		return bad("command has no body")
	}
	return nil
}

func validUsers(cmd *parleyv1.Command, users []string) *parleyv1.Outcome {
	if len(users) == 0 {
		return reject(cmd, parleyv1.Reason_REASON_MALFORMED, "no users")
	}
	for _, u := range users {
		if !schema.ValidUserID(u) {
			return reject(cmd, parleyv1.Reason_REASON_MALFORMED, "invalid user %q", clip(u))
		}
	}
	return nil
}

// dedupe returns users without repeats, in first-seen order, leaving out skip.
func dedupe(users []string, skip string) []string {
	seen := make(map[string]bool, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if u != skip && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// apply decides cmd against the partition's state at time now (Unix ms).
// It returns the event to append (nil if none) and the outcome. State is
// updated in memory and marked for the next flush.
//
// Of a send, edit, revoke or read the state keeps only the ids of its
// window entry, which sequence copies: such a command's strings may share
// the memory of the record it came from (schema.DecodeSharedCommand).
// The state keeps much of a command that creates a conversation or
// changes its members (ids, title, users): such a command must not (see
// decide).
func (p *partition) apply(cmd *parleyv1.Command, now int64) (*parleyv1.Event, *parleyv1.Outcome) {
	if o := validate(cmd); o != nil {
		return nil, o
	}
	c := p.convs[cmd.Conv]
	if create, ok := cmd.Body.(*parleyv1.Command_Create); ok {
		if c != nil {
			return nil, p.createExisting(c, cmd, create.Create)
		}
		return p.create(cmd, create.Create, now)
	}
	if c == nil {
		return nil, reject(cmd, parleyv1.Reason_REASON_CONV_NOT_FOUND, "no conversation %s", cmd.Conv)
	}
	if cmd.Cmid != "" {
		if r, ok := c.findCmid(cmd.From, cmd.Cmid); ok {
			return nil, duplicate(cmd, r.event(cmd.Conv))
		}
	}
	me := c.members[cmd.From]
	if me == nil {
		return nil, reject(cmd, parleyv1.Reason_REASON_NOT_MEMBER, "%s is not a member of %s", cmd.From, cmd.Conv)
	}
	ev := p.event()
	ev.Conv, ev.MsgId, ev.Cmid, ev.From = cmd.Conv, cmd.MsgId, cmd.Cmid, cmd.From
	switch b := cmd.Body.(type) {
	case *parleyv1.Command_Send:
		ev.Type, ev.Kind, ev.Body = parleyv1.EventType_EVENT_TYPE_MESSAGE, b.Send.Kind, b.Send.Body
	case *parleyv1.Command_Edit:
		if o := p.checkTarget(c, cmd, b.Edit.Target, false); o != nil {
			return nil, o
		}
		ev.Type, ev.Target, ev.Body = parleyv1.EventType_EVENT_TYPE_EDIT, b.Edit.Target, b.Edit.Body
	case *parleyv1.Command_Revoke:
		if o := p.checkTarget(c, cmd, b.Revoke.Target, true); o != nil {
			return nil, o
		}
		ev.Type, ev.Target = parleyv1.EventType_EVENT_TYPE_REVOKE, b.Revoke.Target
	case *parleyv1.Command_Read:
		if b.Read.Seq > c.head.LastSeq {
			return nil, reject(cmd, parleyv1.Reason_REASON_TARGET_NOT_FOUND, "seq %d is beyond the last seq %d", b.Read.Seq, c.head.LastSeq)
		}
		if b.Read.Seq <= me.ReadSeq {
			return nil, unchanged(cmd)
		}
		ev.Type, ev.Target = parleyv1.EventType_EVENT_TYPE_READ, b.Read.Seq
	case *parleyv1.Command_AddMembers:
		if o := p.checkChangeMembers(c, cmd, false); o != nil {
			return nil, o
		}
		var added []string
		for _, u := range dedupe(b.AddMembers.Users, "") {
			if c.members[u] == nil {
				added = append(added, u)
			}
		}
		if len(added) == 0 {
			return nil, unchanged(cmd)
		}
		if len(c.members)+len(added) > p.rules.maxMembers {
			return nil, reject(cmd, parleyv1.Reason_REASON_TOO_MANY_MEMBERS, "a group has at most %d members", p.rules.maxMembers)
		}
		ev.Type, ev.Members = parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, added
	case *parleyv1.Command_RemoveMembers:
		users := dedupe(b.RemoveMembers.Users, "")
		self := len(users) == 1 && users[0] == cmd.From
		if o := p.checkChangeMembers(c, cmd, self); o != nil {
			return nil, o
		}
		var removed []string
		for _, u := range users {
			if c.members[u] != nil {
				removed = append(removed, u)
			}
		}
		if len(removed) == 0 {
			return nil, unchanged(cmd)
		}
		ev.Type, ev.Members = parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED, removed
	}
	if o := checkEventSize(cmd, ev); o != nil {
		return nil, o
	}
	p.sequence(c, ev, now)
	return ev, p.sequenced(cmd, ev)
}

// decideScratch is the memory apply uses while one partition's commands
// of a transaction are decided: every command's event is built in ev in
// turn (the caller encodes it before the next command), and the outcomes
// of sequenced ones are carved from outs, whose capacity is the
// partition's command count (one outcome at most a command), so that it
// never moves.
type decideScratch struct {
	ev   parleyv1.Event
	outs []sequencedOutcome
}

// sequencedOutcome is a sequenced command's outcome and the event it
// carries.
type sequencedOutcome struct {
	o parleyv1.Outcome
	e parleyv1.Event
}

func newDecideScratch(commands int) *decideScratch {
	return &decideScratch{outs: make([]sequencedOutcome, 0, commands)}
}

// event returns an empty event for apply to fill: the scratch one, valid
// until the next apply, or a new one.
func (p *partition) event() *parleyv1.Event {
	if p.scratch == nil {
		return new(parleyv1.Event)
	}
	ev := &p.scratch.ev
	ev.Reset()
	return ev
}

// sequenced is the outcome of a command that became ev (see sequenced).
func (p *partition) sequenced(cmd *parleyv1.Command, ev *parleyv1.Event) *parleyv1.Outcome {
	if sc := p.scratch; sc != nil && len(sc.outs) < cap(sc.outs) {
		sc.outs = sc.outs[:len(sc.outs)+1]
		so := &sc.outs[len(sc.outs)-1]
		fillSequenced(&so.o, &so.e, cmd, ev)
		return &so.o
	}
	return sequenced(cmd, ev)
}

// maxEventBytes bounds an event's encoding, so that its record stays below
// the producer's and the broker's default limits (about 1 MB): a record the
// log refuses would abort every transaction holding it, and the partition
// would stop. Within the default limits no command comes near it (a group
// of 10,000 members of 64-byte ids is about 660 KiB); it matters when
// MaxMembers is raised.
const maxEventBytes = 960 << 10

// boundedEventBytes bounds the encoding of an event without members: every
// other field's content is bounded by validate, and each of the 13 fields
// takes at most 13 bytes besides (a tag, then a length or a varint of at
// most 10 bytes).
const boundedEventBytes = schema.MaxConvIDLen + schema.MaxMsgIDLen + schema.MaxCMIDLen + schema.MaxUserIDLen +
	schema.MaxKindLen + schema.MaxBodyLen + schema.MaxTitleLen + 13*(2+11)

// checkEventSize rejects a command whose event would be over
// maxEventBytes, before it changes any state. Only a member list can make
// an event that large (see boundedEventBytes).
func checkEventSize(cmd *parleyv1.Command, ev *parleyv1.Event) *parleyv1.Outcome {
	if len(ev.Members) == 0 && boundedEventBytes <= maxEventBytes {
		return nil
	}
	// seq and ts are not set yet: allow for their largest varints.
	if n := ev.SizeVT() + 2*11; n > maxEventBytes {
		return reject(cmd, parleyv1.Reason_REASON_TOO_LARGE, "the event would be %d bytes, the limit is %d", n, maxEventBytes)
	}
	return nil
}

// checkTarget validates an edit (revoke false) or revoke target.
func (p *partition) checkTarget(c *convState, cmd *parleyv1.Command, target int64, revoke bool) *parleyv1.Outcome {
	if target > c.head.LastSeq {
		return reject(cmd, parleyv1.Reason_REASON_TARGET_NOT_FOUND, "no event %d", target)
	}
	if target < c.windowStart() {
		return reject(cmd, parleyv1.Reason_REASON_TARGET_EXPIRED, "message %d is too old to change", target)
	}
	r, ok := c.entry(target)
	if !ok || r.entry().typ != parleyv1.EventType_EVENT_TYPE_MESSAGE {
		return reject(cmd, parleyv1.Reason_REASON_TARGET_NOT_FOUND, "event %d is not a message", target)
	}
	if c.revoked[target] {
		return reject(cmd, parleyv1.Reason_REASON_TARGET_REVOKED, "message %d was revoked", target)
	}
	if _, _, from := r.ids(); string(from) != cmd.From {
		ownerMayRevoke := revoke && c.head.Kind == parleyv1.ConvKind_CONV_KIND_GROUP && c.head.Owner == cmd.From
		if !ownerMayRevoke {
			return reject(cmd, parleyv1.Reason_REASON_NOT_AUTHOR, "message %d is not %s's", target, cmd.From)
		}
	}
	return nil
}

// checkChangeMembers applies the membership rules: a direct conversation's
// members are fixed; in a group the owner adds and removes anyone, and any
// member may remove themself.
func (p *partition) checkChangeMembers(c *convState, cmd *parleyv1.Command, self bool) *parleyv1.Outcome {
	if c.head.Kind == parleyv1.ConvKind_CONV_KIND_DIRECT {
		return reject(cmd, parleyv1.Reason_REASON_DIRECT_FIXED, "the members of a direct conversation cannot change")
	}
	if !self && c.head.Owner != cmd.From {
		return reject(cmd, parleyv1.Reason_REASON_NOT_OWNER, "only the owner %s changes the members of %s", c.head.Owner, cmd.Conv)
	}
	return nil
}

func (p *partition) create(cmd *parleyv1.Command, cr *parleyv1.Create, now int64) (*parleyv1.Event, *parleyv1.Outcome) {
	others := dedupe(cr.Members, cmd.From)
	switch cr.Kind {
	case parleyv1.ConvKind_CONV_KIND_DIRECT:
		if len(others) != 1 {
			return nil, reject(cmd, parleyv1.Reason_REASON_MALFORMED, "a direct conversation has exactly one other member")
		}
		if want := schema.DirectConvID(cmd.From, others[0]); cmd.Conv != want {
			return nil, reject(cmd, parleyv1.Reason_REASON_MALFORMED, "the direct conversation of %s and %s is %s", cmd.From, others[0], want)
		}
		if cr.Title != "" {
			return nil, reject(cmd, parleyv1.Reason_REASON_MALFORMED, "a direct conversation has no title")
		}
	case parleyv1.ConvKind_CONV_KIND_GROUP:
		// Only KSUIDs: a group must not take the id of a direct pair.
		if _, err := ksuid.Parse(cmd.Conv); err != nil {
			return nil, reject(cmd, parleyv1.Reason_REASON_MALFORMED, "a group's id is a KSUID")
		}
		if 1+len(others) > p.rules.maxMembers {
			return nil, reject(cmd, parleyv1.Reason_REASON_TOO_MANY_MEMBERS, "a group has at most %d members", p.rules.maxMembers)
		}
	}
	members := append([]string{cmd.From}, others...)
	ev := &parleyv1.Event{
		Conv: cmd.Conv, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: cmd.MsgId, Cmid: cmd.Cmid,
		From: cmd.From, ConvKind: cr.Kind, Title: cr.Title, Members: members,
	}
	if o := checkEventSize(cmd, ev); o != nil {
		return nil, o
	}
	c := newConvState(&parleyv1.ConvState{
		Conv: cmd.Conv, Kind: cr.Kind, Title: cr.Title, Owner: cmd.From,
		CreatedMsgId: cmd.MsgId, CreatedTs: max(now, 0),
	})
	p.convs[cmd.Conv] = c
	p.sequence(c, ev, now)
	return ev, sequenced(cmd, ev)
}

// createExisting answers a create for a conversation that exists: a retry
// (same cmid) or a direct conversation created again by one of its pair
// gets the original; anything else is refused.
func (p *partition) createExisting(c *convState, cmd *parleyv1.Command, cr *parleyv1.Create) *parleyv1.Outcome {
	original := &parleyv1.Event{
		Conv: cmd.Conv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: c.head.CreatedMsgId,
		From: c.head.Owner, Ts: c.head.CreatedTs,
	}
	if cmd.Cmid != "" {
		if r, ok := c.findCmid(cmd.From, cmd.Cmid); ok {
			return duplicate(cmd, r.event(cmd.Conv))
		}
	}
	if cmd.From == original.From && cmd.MsgId == original.MsgId {
		return duplicate(cmd, original) // the same command again
	}
	if c.head.Kind == parleyv1.ConvKind_CONV_KIND_DIRECT && cr.Kind == parleyv1.ConvKind_CONV_KIND_DIRECT {
		others := dedupe(cr.Members, cmd.From)
		if len(others) == 1 && schema.DirectConvID(cmd.From, others[0]) == cmd.Conv {
			// The id is derived from the pair, so the sender is one of the two.
			return duplicate(cmd, original)
		}
	}
	return reject(cmd, parleyv1.Reason_REASON_CONV_EXISTS, "conversation %s already exists", cmd.Conv)
}

// sequence gives ev the next seq and folds it into the state.
func (p *partition) sequence(c *convState, ev *parleyv1.Event, now int64) {
	h := c.head
	h.LastSeq++
	h.LastTs = max(now, h.LastTs)
	ev.Seq, ev.Ts = h.LastSeq, h.LastTs
	p.touch(c)
	switch ev.Type {
	case parleyv1.EventType_EVENT_TYPE_CREATED, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED:
		if ev.Type == parleyv1.EventType_EVENT_TYPE_CREATED {
			h.CreatedTs = ev.Ts
		}
		// A member's read cursor starts at the event that made them one:
		// nothing from before they joined counts as unread.
		for _, u := range ev.Members {
			p.setMember(c, &parleyv1.MemberState{User: u, JoinedSeq: ev.Seq, ReadSeq: ev.Seq})
		}
	case parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED:
		for _, u := range ev.Members {
			p.dropMember(c, u)
		}
		if c.members[h.Owner] == nil {
			h.Owner = nextOwner(c.members)
		}
	case parleyv1.EventType_EVENT_TYPE_READ:
		m := c.members[ev.From]
		p.setMember(c, &parleyv1.MemberState{User: m.User, JoinedSeq: m.JoinedSeq, ReadSeq: ev.Target})
	}
	h.MemberCount = int64(len(c.members))
	if ev.Cmid != "" {
		c.record(ev, p.rules, ev.Ts)
	}
}

// nextOwner picks a group's owner when the owner leaves: the longest-standing
// member (lowest joined seq, then lowest user id), or "" if none is left.
func nextOwner(members map[string]*parleyv1.MemberState) string {
	var best *parleyv1.MemberState
	for _, m := range members {
		if best == nil || m.JoinedSeq < best.JoinedSeq || (m.JoinedSeq == best.JoinedSeq && m.User < best.User) {
			best = m
		}
	}
	if best == nil {
		return ""
	}
	return best.User
}
