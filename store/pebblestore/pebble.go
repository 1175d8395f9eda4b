// Package pebblestore is the embedded timeline store on Pebble, for the
// all-in-one mode and single-node deployments.
//
// Key layout (conversation and user ids never contain NUL):
//
//	'e' conv 0x00 seq(8 bytes, big-endian)  -> parleyv1.Event (protobuf)
//	'h' conv                                -> conversation head
//	'm' conv 0x00 user                      -> membership
//	'u' user 0x00 conv                      -> "" while user is a member
//	'r' conv 0x00 seq(8 bytes, big-endian)  -> "": message seq is revoked
//
// so a conversation's events are one contiguous range, scanned forward or
// backward, and a user's conversations are one prefix scan.
package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// Store is a store.Store on Pebble.
type Store struct {
	db   *pebble.DB
	mu   sync.Mutex // serialises Append's read-modify-writes
	sync *pebble.WriteOptions
}

var _ store.Store = (*Store)(nil)

// Options tunes Open.
type Options struct {
	// NoSync makes Append return before its batch reaches the disk. For
	// bulk loads (rebuild) that call Flush at the end.
	NoSync bool
	// CacheSize is the block cache's size in bytes; default 64 MiB. Pebble
	// takes its memtables' memory from the cache, so a cache not much
	// bigger than them caches nothing and every history page reads the
	// disk.
	CacheSize int64
}

// Open opens (creating if needed) the store in dir. Only one process may
// have a directory open at a time.
func Open(dir string, o Options) (*Store, error) {
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	cache := pebble.NewCache(o.CacheSize)
	defer cache.Unref() // the DB holds its own reference
	opts := &pebble.Options{Logger: quietLogger{}, Cache: cache, MemTableSize: 16 << 20}
	// Bloom filters spare the point reads of heads and memberships that
	// miss a table (most of them) the table's blocks.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	s := &Store{db: db}
	if o.NoSync {
		s.sync = pebble.NoSync
	} else {
		s.sync = pebble.Sync
	}
	return s, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Flush makes everything appended so far durable.
func (s *Store) Flush() error { return s.db.Flush() }

func eventKey(conv string, seq int64) []byte {
	k := make([]byte, 0, 2+len(conv)+8)
	k = append(k, 'e')
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(seq))
}

// revokedKey marks message seq of conv revoked (empty value).
func revokedKey(conv string, seq int64) []byte {
	k := eventKey(conv, seq)
	k[0] = 'r'
	return k
}

func headKey(conv string) []byte { return append([]byte{'h'}, conv...) }

func memberKey(conv, user string) []byte {
	k := append([]byte{'m'}, conv...)
	k = append(k, 0)
	return append(k, user...)
}

func userKey(user, conv string) []byte {
	k := append([]byte{'u'}, user...)
	k = append(k, 0)
	return append(k, conv...)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// where p ends in 0x00.
func prefixEnd(p []byte) []byte {
	e := append([]byte(nil), p...)
	e[len(e)-1] = 1
	return e
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, events []*parleyv1.Event) error {
	if len(events) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	var buf []byte
	for _, ev := range events {
		n := ev.SizeVT()
		buf = slices.Grow(buf[:0], n)[:n]
		if _, err := ev.MarshalToSizedBufferVT(buf); err != nil {
			return fmt.Errorf("pebblestore: encode event: %w", err)
		}
		if err := b.Set(eventKey(ev.Conv, ev.Seq), buf, nil); err != nil {
			return err
		}
	}
	plan := store.MakePlan(events)
	for _, r := range plan.Revoked {
		if err := b.Set(revokedKey(r.Conv, r.Seq), nil, nil); err != nil {
			return err
		}
	}
	for _, h := range plan.Heads {
		cur, err := s.head(h.Conv)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		cur.Conv = h.Conv
		cur.LastSeq = max(cur.LastSeq, h.LastSeq)
		if c := h.Created; c != nil {
			cur.Kind, cur.Title, cur.CreatedTS = c.ConvKind, c.Title, c.Ts
		}
		if err := b.Set(headKey(h.Conv), encodeHead(cur), nil); err != nil {
			return err
		}
	}
	for _, u := range plan.Members {
		cur, changed, err := s.membership(u.Conv, u.User)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		cur.Conv, cur.User = u.Conv, u.User
		cur, changed = store.ApplyMember(cur, changed, u)
		if err := b.Set(memberKey(u.Conv, u.User), encodeMember(cur, changed), nil); err != nil {
			return err
		}
		if cur.Current() {
			err = b.Set(userKey(u.User, u.Conv), nil, nil)
		} else {
			err = b.Delete(userKey(u.User, u.Conv), nil)
		}
		if err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.Commit(s.sync)
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, conv string, r store.Range) ([]*parleyv1.Event, bool, error) {
	if err := r.Validate(); err != nil {
		return nil, false, err
	}
	prefix := eventKey(conv, 0)[:len(conv)+2]
	var opts pebble.IterOptions
	if r.Before > 0 {
		opts.LowerBound, opts.UpperBound = prefix, eventKey(conv, r.Before)
	} else {
		opts.LowerBound, opts.UpperBound = eventKey(conv, r.After+1), prefixEnd(prefix)
	}
	it, err := s.db.NewIterWithContext(ctx, &opts)
	if err != nil {
		return nil, false, err
	}
	defer it.Close()

	var out []*parleyv1.Event
	more := false
	valid, next := it.First, it.Next
	if r.Before > 0 {
		valid, next = it.Last, it.Prev
	}
	for ok := valid(); ok; ok = next() {
		if len(out) == r.Limit {
			more = true
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, false, err
		}
		ev := new(parleyv1.Event)
		if err := schema.UnmarshalEvent(v, ev); err != nil {
			return nil, false, fmt.Errorf("pebblestore: decode event %s/%x: %w", conv, it.Key(), err)
		}
		out = append(out, ev)
	}
	if err := it.Error(); err != nil {
		return nil, false, err
	}
	if r.Before > 0 {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	if err := s.redact(conv, out); err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// redactTarget returns the message whose revocation ev (a message or an
// edit) shows, or 0.
func redactTarget(ev *parleyv1.Event) int64 {
	switch ev.Type {
	case parleyv1.EventType_EVENT_TYPE_MESSAGE:
		return ev.Seq
	case parleyv1.EventType_EVENT_TYPE_EDIT:
		return ev.Target
	}
	return 0
}

// redact applies revocations to the messages and edits of evs, events of
// conv: one scan of the revocation marks between the lowest and highest
// message they show (revocations are rare, so the scan meets few keys).
func (s *Store) redact(conv string, evs []*parleyv1.Event) error {
	lo, hi := int64(0), int64(0)
	for _, ev := range evs {
		if t := redactTarget(ev); t > 0 {
			if lo == 0 || t < lo {
				lo = t
			}
			hi = max(hi, t)
		}
	}
	if hi == 0 {
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: revokedKey(conv, lo), UpperBound: revokedKey(conv, hi+1)})
	if err != nil {
		return err
	}
	defer it.Close()
	var revoked map[int64]bool
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if revoked == nil {
			revoked = map[int64]bool{}
		}
		revoked[int64(binary.BigEndian.Uint64(k[len(k)-8:]))] = true
	}
	if err := it.Error(); err != nil {
		return err
	}
	if revoked == nil {
		return nil
	}
	for _, ev := range evs {
		if t := redactTarget(ev); t > 0 && revoked[t] {
			store.Redact(ev)
		}
	}
	return nil
}

// CountMessages implements store.Store.
func (s *Store) CountMessages(ctx context.Context, conv string, after, upTo int64, except string, max int) (int, error) {
	if after >= upTo {
		return 0, nil
	}
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: eventKey(conv, after+1), UpperBound: eventKey(conv, upTo+1)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	var ev parleyv1.Event
	for ok := it.First(); ok && n < max; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		if err := schema.UnmarshalEvent(v, &ev); err != nil {
			return 0, fmt.Errorf("pebblestore: decode event %s/%x: %w", conv, it.Key(), err)
		}
		if ev.Type == parleyv1.EventType_EVENT_TYPE_MESSAGE && ev.From != except {
			n++
		}
	}
	return n, it.Error()
}

// Conversation implements store.Store.
func (s *Store) Conversation(ctx context.Context, conv string) (store.Conversation, error) {
	return s.head(conv)
}

// Membership implements store.Store.
func (s *Store) Membership(ctx context.Context, conv, user string) (store.Membership, error) {
	m, _, err := s.membership(conv, user)
	return m, err
}

// Members implements store.Store.
func (s *Store) Members(ctx context.Context, conv string) ([]store.Membership, error) {
	prefix := memberKey(conv, "")
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []store.Membership
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		m, _, err := decodeMember(v)
		if err != nil {
			return nil, err
		}
		if m.Current() {
			m.Conv, m.User = conv, string(it.Key()[len(prefix):])
			out = append(out, m)
		}
	}
	return out, it.Error()
}

// UserConversations implements store.Store.
func (s *Store) UserConversations(ctx context.Context, user string) ([]store.UserConversation, error) {
	prefix := userKey(user, "")
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []store.UserConversation
	for ok := it.First(); ok; ok = it.Next() {
		conv := string(it.Key()[len(prefix):])
		h, err := s.head(conv)
		if err != nil {
			return nil, fmt.Errorf("pebblestore: conversation %s of user %s: %w", conv, user, err)
		}
		m, _, err := s.membership(conv, user)
		if err != nil {
			return nil, fmt.Errorf("pebblestore: membership %s of user %s: %w", conv, user, err)
		}
		out = append(out, store.UserConversation{Conversation: h, JoinedSeq: m.JoinedSeq, ReadSeq: m.ReadSeq})
	}
	return out, it.Error()
}

func (s *Store) head(conv string) (store.Conversation, error) {
	v, closer, err := s.db.Get(headKey(conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return store.Conversation{}, store.ErrNotFound
	}
	if err != nil {
		return store.Conversation{}, err
	}
	defer closer.Close()
	h, err := decodeHead(v)
	h.Conv = conv
	return h, err
}

func (s *Store) membership(conv, user string) (store.Membership, int64, error) {
	v, closer, err := s.db.Get(memberKey(conv, user))
	if errors.Is(err, pebble.ErrNotFound) {
		return store.Membership{}, 0, store.ErrNotFound
	}
	if err != nil {
		return store.Membership{}, 0, err
	}
	defer closer.Close()
	m, changed, err := decodeMember(v)
	m.Conv, m.User = conv, user
	return m, changed, err
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
