package store

import (
	"cmp"
	"slices"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Plan is what a batch of events changes beyond the events themselves,
// reduced to one update per conversation head and per membership. An
// implementation applies each update only where it moves state forward
// (see HeadUpdate and MemberUpdate), which makes replays harmless.
type Plan struct {
	Heads   []HeadUpdate
	Members []MemberUpdate
	// Revoked lists the messages the batch revokes: from then on the store
	// serves them, and their edits, without a body (see Redact).
	Revoked []Revocation
}

// Revocation marks message Seq of Conv revoked by the event at seq At.
type Revocation struct {
	Conv    string
	Seq, At int64
}

// Redact removes what a revoked message must no longer show: the body of
// the message itself and of its edits.
func Redact(ev *parleyv1.Event) { ev.Body = nil }

// HeadUpdate raises a conversation's LastSeq to at least LastSeq; when
// Created is set it also records kind, title and creation time.
type HeadUpdate struct {
	Conv    string
	LastSeq int64
	Created *parleyv1.Event
}

// MemberUpdate changes one membership: the batch's last join (JoinSeq) and,
// if the user left after it, their removal (RemoveSeq). Each applies only if
// it is newer than the stored membership's last change: a join sets
// JoinedSeq, clears RemovedSeq and starts the read cursor at JoinSeq (nothing
// from before joining is unread); a removal sets RemovedSeq. Then the read
// cursor becomes max(cursor, ReadSeq), ReadSeq being the furthest read after
// the batch's last join. Zero fields change nothing.
type MemberUpdate struct {
	Conv, User string
	JoinSeq    int64
	RemoveSeq  int64
	ReadSeq    int64
	// ReadAt is the seq of the read event that set ReadSeq, for stores that
	// order writes by event seq rather than compare values.
	ReadAt int64
}

// MakePlan reduces events to a Plan. Events of one conversation must be in
// seq order.
func MakePlan(events []*parleyv1.Event) Plan {
	type mkey struct{ conv, user string }
	heads := make(map[string]*HeadUpdate)
	members := make(map[mkey]*MemberUpdate)
	var revoked []Revocation
	member := func(conv, user string) *MemberUpdate {
		k := mkey{conv, user}
		m := members[k]
		if m == nil {
			m = &MemberUpdate{Conv: conv, User: user}
			members[k] = m
		}
		return m
	}
	for _, ev := range events {
		h := heads[ev.Conv]
		if h == nil {
			h = &HeadUpdate{Conv: ev.Conv}
			heads[ev.Conv] = h
		}
		h.LastSeq = max(h.LastSeq, ev.Seq)
		switch ev.Type {
		case parleyv1.EventType_EVENT_TYPE_CREATED:
			h.Created = ev
			for _, u := range ev.Members {
				m := member(ev.Conv, u)
				m.JoinSeq, m.RemoveSeq, m.ReadSeq, m.ReadAt = ev.Seq, 0, 0, 0
			}
		case parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED:
			for _, u := range ev.Members {
				m := member(ev.Conv, u)
				m.JoinSeq, m.RemoveSeq, m.ReadSeq, m.ReadAt = ev.Seq, 0, 0, 0
			}
		case parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED:
			for _, u := range ev.Members {
				member(ev.Conv, u).RemoveSeq = ev.Seq
			}
		case parleyv1.EventType_EVENT_TYPE_REVOKE:
			revoked = append(revoked, Revocation{Conv: ev.Conv, Seq: ev.Target, At: ev.Seq})
		case parleyv1.EventType_EVENT_TYPE_READ:
			m := member(ev.Conv, ev.From)
			m.ReadSeq, m.ReadAt = max(m.ReadSeq, ev.Target), ev.Seq
		}
	}
	p := Plan{Revoked: revoked}
	for _, h := range heads {
		p.Heads = append(p.Heads, *h)
	}
	for _, m := range members {
		p.Members = append(p.Members, *m)
	}
	// A stable order keeps writes deterministic.
	slices.SortFunc(p.Heads, func(a, b HeadUpdate) int { return cmp.Compare(a.Conv, b.Conv) })
	slices.SortFunc(p.Members, func(a, b MemberUpdate) int {
		return cmp.Or(cmp.Compare(a.Conv, b.Conv), cmp.Compare(a.User, b.User))
	})
	return p
}

// ApplyMember returns cur updated by u, following MemberUpdate's rules.
// changed is the seq of cur's last membership change (0 if none).
func ApplyMember(cur Membership, changed int64, u MemberUpdate) (Membership, int64) {
	if u.JoinSeq > changed {
		changed = u.JoinSeq
		cur.JoinedSeq, cur.RemovedSeq, cur.ReadSeq = u.JoinSeq, 0, u.JoinSeq
	}
	if u.RemoveSeq > changed {
		changed = u.RemoveSeq
		cur.RemovedSeq = u.RemoveSeq
	}
	cur.ReadSeq = max(cur.ReadSeq, u.ReadSeq)
	return cur, changed
}
