package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// BucketSize is the number of consecutive seqs in one events partition.
// Readers and writers must agree on it: it is part of the schema.
const BucketSize = 256

func bucket(seq int64) int64 { return seq / BucketSize }

// Config configures the store.
type Config struct {
	// Hosts are contact points, host or host:port. Required.
	Hosts []string
	// Port is the native protocol port for hosts without one; default 9042.
	Port int
	// Keyspace; default "parley".
	Keyspace string
	// Consistency for reads and writes; default LOCAL_QUORUM.
	Consistency gocql.Consistency
	// LocalDC, if set, keeps requests in that datacenter.
	LocalDC string
	// Timeout per request; default 5s.
	Timeout time.Duration
	// Retries of a failed request on another replica (with exponential
	// backoff from 100 ms to 2 s); default 3. Every request is idempotent,
	// so retries are safe. (The writer also retries a failed batch itself,
	// until the store takes it.)
	Retries int
	// Parallelism bounds the requests one Append or list runs at once;
	// default 32.
	Parallelism int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = 9042
	}
	if c.Keyspace == "" {
		c.Keyspace = "parley"
	}
	if c.Consistency == 0 {
		c.Consistency = gocql.LocalQuorum
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 3
	}
	if c.Parallelism == 0 {
		c.Parallelism = 32
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if len(c.Hosts) == 0 {
		return errors.New("cassandrastore: no hosts")
	}
	if !validKeyspace(c.Keyspace) {
		return fmt.Errorf("cassandrastore: invalid keyspace name %q", c.Keyspace)
	}
	return nil
}

func validKeyspace(k string) bool {
	if k == "" || len(k) > 48 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// cluster returns the driver configuration for c, without a keyspace.
func (c Config) cluster() *gocql.ClusterConfig {
	cl := gocql.NewCluster(c.Hosts...)
	cl.Port = c.Port
	cl.Consistency = c.Consistency
	cl.Timeout = c.Timeout
	cl.ConnectTimeout = c.Timeout
	cl.RetryPolicy = &gocql.ExponentialBackoffRetryPolicy{NumRetries: c.Retries, Min: 100 * time.Millisecond, Max: 2 * time.Second}
	fallback := gocql.RoundRobinHostPolicy()
	if c.LocalDC != "" {
		fallback = gocql.DCAwareRoundRobinPolicy(c.LocalDC)
	}
	// Token-aware: each request goes to a replica of its partition.
	cl.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(fallback)
	// Keep reconnecting to a node that went away, however long it is gone.
	cl.ReconnectionPolicy = &gocql.ExponentialReconnectionPolicy{MaxRetries: 1 << 30, InitialInterval: 500 * time.Millisecond, MaxInterval: 10 * time.Second}
	cl.ReconnectInterval = 5 * time.Second
	return cl
}

// Store is a store.Store on Cassandra.
type Store struct {
	cfg     Config
	session *gocql.Session
}

var _ store.Store = (*Store)(nil)

// Open connects to the cluster and the keyspace, which must have been
// migrated (see Migrate).
func Open(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cl := cfg.cluster()
	cl.Keyspace = cfg.Keyspace
	s, err := cl.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("cassandrastore: connect to %v: %w", cfg.Hosts, err)
	}
	return &Store{cfg: cfg, session: s}, nil
}

// Close closes the session.
func (s *Store) Close() error {
	s.session.Close()
	return nil
}

// Ping checks that the cluster answers a query at the configured
// consistency.
func (s *Store) Ping(ctx context.Context) error {
	// A read of one (absent) partition: it needs as many replicas as any
	// read does. Partition keys may not be empty, hence the name.
	var n int
	return s.session.Query(`SELECT COUNT(*) FROM conversations WHERE conv = ?`, "readyz-probe").
		Consistency(s.cfg.Consistency).ScanContext(ctx, &n)
}

// Empty reports whether the keyspace holds no conversation.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	var conv string
	err := s.session.Query(`SELECT conv FROM conversations LIMIT 1`).Idempotent(true).ScanContext(ctx, &conv)
	if errors.Is(err, gocql.ErrNotFound) {
		return true, nil
	}
	return false, err
}

const (
	insertEvent = `INSERT INTO events (conv, bucket, seq, type, msg_id, sender, ts, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	setCreated  = `UPDATE conversations USING TIMESTAMP ? SET kind = ?, title = ?, created_ts = ? WHERE conv = ?`
	setLastSeq  = `UPDATE conversations USING TIMESTAMP ? SET last_seq = ? WHERE conv = ?`
	joinMember  = `UPDATE members USING TIMESTAMP ? SET joined_seq = ?, removed_seq = 0, read_seq = ? WHERE conv = ? AND user_id = ?`
	leaveMember = `UPDATE members USING TIMESTAMP ? SET removed_seq = ? WHERE conv = ? AND user_id = ?`
	readMember  = `UPDATE members USING TIMESTAMP ? SET read_seq = ? WHERE conv = ? AND user_id = ?`
	joinUser    = `UPDATE user_conversations USING TIMESTAMP ? SET joined_seq = ?, removed_seq = 0, read_seq = ? WHERE user_id = ? AND conv = ?`
	leaveUser   = `UPDATE user_conversations USING TIMESTAMP ? SET removed_seq = ? WHERE user_id = ? AND conv = ?`
	readUser    = `UPDATE user_conversations USING TIMESTAMP ? SET read_seq = ? WHERE user_id = ? AND conv = ?`
	revokeEvent = `UPDATE events USING TIMESTAMP ? SET revoked = true WHERE conv = ? AND bucket = ? AND seq = ?`
)

// Append implements store.Store. It writes in four steps, each waiting for
// the one before: the events, one unlogged batch per (conv, bucket)
// partition (split by size); the members rows; the heads; the users'
// lists. So a head never announces a seq whose event, or whose membership
// change, is not stored yet, and a list entry never points at a missing
// head. (That holds for readers at the writers' consistency in one
// datacenter, LOCAL_QUORUM by default.)
func (s *Store) Append(ctx context.Context, events []*parleyv1.Event) error {
	if len(events) == 0 {
		return nil
	}
	type part struct {
		conv   string
		bucket int64
	}
	parts := make(map[part]*batcher)
	var order []part
	for _, ev := range events {
		v, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("cassandrastore: encode event: %w", err)
		}
		k := part{ev.Conv, bucket(ev.Seq)}
		b := parts[k]
		if b == nil {
			b = &batcher{s: s}
			parts[k] = b
			order = append(order, k)
		}
		b.add(len(v), insertEvent, ev.Conv, k.bucket, ev.Seq, schema.EventTypeName(ev.Type), ev.MsgId, ev.From, ev.Ts, v)
	}
	var eventBatches []*gocql.Batch
	for _, k := range order {
		eventBatches = append(eventBatches, parts[k].batches...)
	}
	if err := s.runAll(ctx, eventBatches); err != nil {
		return err
	}

	plan := store.MakePlan(events)
	// Revocations with the events: a reader that sees the revoke event
	// finds its target redacted.
	revokes := make([]*gocql.Batch, 0, len(plan.Revoked))
	for _, r := range plan.Revoked {
		b := s.batch()
		b.Query(revokeEvent, r.At, r.Conv, bucket(r.Seq), r.Seq)
		revokes = append(revokes, b)
	}
	if err := s.runAll(ctx, revokes); err != nil {
		return err
	}
	members := make(map[string]*batcher)
	var memberConvs []string
	var users []*gocql.Batch
	for _, u := range plan.Members {
		b := members[u.Conv]
		if b == nil {
			b = &batcher{s: s}
			members[u.Conv] = b
			memberConvs = append(memberConvs, u.Conv)
		}
		ub := &batcher{s: s}
		if u.JoinSeq > 0 {
			b.add(0, joinMember, u.JoinSeq, u.JoinSeq, u.JoinSeq, u.Conv, u.User)
			ub.add(0, joinUser, u.JoinSeq, u.JoinSeq, u.JoinSeq, u.User, u.Conv)
		}
		if u.RemoveSeq > 0 {
			b.add(0, leaveMember, u.RemoveSeq, u.RemoveSeq, u.Conv, u.User)
			ub.add(0, leaveUser, u.RemoveSeq, u.RemoveSeq, u.User, u.Conv)
		}
		if u.ReadAt > 0 {
			b.add(0, readMember, u.ReadAt, u.ReadSeq, u.Conv, u.User)
			ub.add(0, readUser, u.ReadAt, u.ReadSeq, u.User, u.Conv)
		}
		users = append(users, ub.batches...)
	}
	var memberBatches []*gocql.Batch
	for _, c := range memberConvs {
		memberBatches = append(memberBatches, members[c].batches...)
	}
	if err := s.runAll(ctx, memberBatches); err != nil {
		return err
	}

	// A head is one batch of at most two statements: never split.
	heads := make([]*gocql.Batch, 0, len(plan.Heads))
	for _, h := range plan.Heads {
		b := s.batch()
		if c := h.Created; c != nil {
			b.Query(setCreated, c.Seq, int(c.ConvKind), c.Title, c.Ts, h.Conv)
		}
		b.Query(setLastSeq, h.LastSeq, h.LastSeq, h.Conv)
		heads = append(heads, b)
	}
	if err := s.runAll(ctx, heads); err != nil {
		return err
	}
	return s.runAll(ctx, users)
}

// Limits of one batch (of one partition): Cassandra warns about batches over
// 5 KiB and some versions (2.2, early 3.x) refuse any over 50 KiB, even of
// one partition. A statement over the byte limit goes alone, and a batch of
// one statement is sent as that statement (execBatch).
const (
	maxBatchStatements = 64
	maxBatchBytes      = 40 << 10
)

// batcher groups statements of one partition into batches within the
// limits.
type batcher struct {
	s       *Store
	batches []*gocql.Batch
	bytes   int
}

// add appends a statement with about size bytes of values.
func (b *batcher) add(size int, stmt string, args ...any) {
	size += 64 // keys and small values
	n := len(b.batches)
	if n == 0 || len(b.batches[n-1].Entries) >= maxBatchStatements || b.bytes+size > maxBatchBytes {
		b.batches = append(b.batches, b.s.batch())
		b.bytes = 0
		n++
	}
	b.batches[n-1].Query(stmt, args...)
	b.bytes += size
}

func (s *Store) batch() *gocql.Batch {
	b := s.session.Batch(gocql.UnloggedBatch)
	b.Cons = s.cfg.Consistency
	return b
}

// runAll executes batches with bounded parallelism and returns the first
// error. Every statement is idempotent.
func (s *Store) runAll(ctx context.Context, batches []*gocql.Batch) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, s.cfg.Parallelism)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, b := range batches {
		if len(b.Entries) == 0 {
			continue
		}
		for i := range b.Entries {
			b.Entries[i].Idempotent = true
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := execBatch(ctx, s.session, b); err != nil {
				once.Do(func() { first = fmt.Errorf("cassandrastore: write: %w", err); cancel() })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// execBatch runs b; a batch of one statement runs as that statement. The
// batch size limit applies to every BATCH request, one of one statement
// included: Cassandra 2.2 to 3.5 refuse one over batch_size_fail_threshold
// (50 KiB by default) even within one partition, so an event with a large
// body, alone in its batch, would be refused on every retry and the writer
// would never get past it. A plain statement has no such limit.
func execBatch(ctx context.Context, session *gocql.Session, b *gocql.Batch) error {
	if len(b.Entries) != 1 {
		return b.ExecContext(ctx)
	}
	e := b.Entries[0]
	return session.Query(e.Stmt, e.Args...).Consistency(b.Cons).Idempotent(e.Idempotent).ExecContext(ctx)
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, conv string, r store.Range) ([]*parleyv1.Event, bool, error) {
	if err := r.Validate(); err != nil {
		return nil, false, err
	}
	h, err := s.Conversation(ctx, conv)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	last := h.LastSeq
	var out []*parleyv1.Event
	if r.Before > 0 {
		hi := min(r.Before-1, last) // highest seq wanted
		for b := bucket(hi); b >= 0 && len(out) < r.Limit && hi >= 1; b-- {
			evs, err := s.scan(ctx, `SELECT event, revoked FROM events WHERE conv = ? AND bucket = ? AND seq <= ? ORDER BY seq DESC LIMIT ?`,
				conv, b, hi, r.Limit-len(out))
			if err != nil {
				return nil, false, err
			}
			out = append(out, evs...)
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		more := len(out) > 0 && out[0].Seq > 1
		if len(out) == 0 {
			more = false
		}
		return out, more, nil
	}
	if r.After >= last {
		return nil, false, nil
	}
	lo := r.After + 1 // lowest seq wanted
	for b := bucket(lo); b <= bucket(last) && len(out) < r.Limit; b++ {
		evs, err := s.scan(ctx, `SELECT event, revoked FROM events WHERE conv = ? AND bucket = ? AND seq >= ? AND seq <= ? LIMIT ?`,
			conv, b, lo, last, r.Limit-len(out))
		if err != nil {
			return nil, false, err
		}
		out = append(out, evs...)
	}
	more := len(out) > 0 && out[len(out)-1].Seq < last
	return out, more, nil
}

// CountMessages implements store.Store from the events' type and sender
// columns, bucket by bucket, without reading the bodies.
func (s *Store) CountMessages(ctx context.Context, conv string, after, upTo int64, except string, max int) (int, error) {
	n := 0
	message := schema.EventTypeName(parleyv1.EventType_EVENT_TYPE_MESSAGE)
	for b := bucket(after + 1); after < upTo && b <= bucket(upTo) && n < max; b++ {
		it := s.session.Query(`SELECT type, sender FROM events WHERE conv = ? AND bucket = ? AND seq > ? AND seq <= ?`,
			conv, b, after, upTo).Idempotent(true).IterContext(ctx)
		var typ, sender string
		for n < max && it.Scan(&typ, &sender) {
			if typ == message && sender != except {
				n++
			}
		}
		if err := it.Close(); err != nil {
			return 0, fmt.Errorf("cassandrastore: count messages: %w", err)
		}
	}
	return n, nil
}

// scan reads events (columns event, revoked) and redacts the revoked
// messages and the edits of revoked messages.
func (s *Store) scan(ctx context.Context, stmt string, args ...any) ([]*parleyv1.Event, error) {
	it := s.session.Query(stmt, args...).Idempotent(true).IterContext(ctx)
	var out []*parleyv1.Event
	var v []byte
	var revoked bool
	for it.Scan(&v, &revoked) {
		ev := new(parleyv1.Event)
		if err := schema.UnmarshalEvent(v, ev); err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("cassandrastore: decode event: %w", err)
		}
		if revoked && ev.Type == parleyv1.EventType_EVENT_TYPE_MESSAGE {
			store.Redact(ev)
		}
		out = append(out, ev)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("cassandrastore: read events: %w", err)
	}
	for _, ev := range out {
		if ev.Type != parleyv1.EventType_EVENT_TYPE_EDIT {
			continue
		}
		var r bool
		err := s.session.Query(`SELECT revoked FROM events WHERE conv = ? AND bucket = ? AND seq = ?`, ev.Conv, bucket(ev.Target), ev.Target).
			Idempotent(true).ScanContext(ctx, &r)
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			return nil, fmt.Errorf("cassandrastore: read the target of an edit: %w", err)
		}
		if r {
			store.Redact(ev)
		}
	}
	return out, nil
}

// Conversation implements store.Store.
func (s *Store) Conversation(ctx context.Context, conv string) (store.Conversation, error) {
	h := store.Conversation{Conv: conv}
	var kind int
	err := s.session.Query(`SELECT kind, title, created_ts, last_seq FROM conversations WHERE conv = ?`, conv).
		Idempotent(true).ScanContext(ctx, &kind, &h.Title, &h.CreatedTS, &h.LastSeq)
	if errors.Is(err, gocql.ErrNotFound) {
		return h, store.ErrNotFound
	}
	if err != nil {
		return h, fmt.Errorf("cassandrastore: read conversation: %w", err)
	}
	h.Kind = parleyv1.ConvKind(kind)
	return h, nil
}

// Membership implements store.Store.
func (s *Store) Membership(ctx context.Context, conv, user string) (store.Membership, error) {
	m := store.Membership{Conv: conv, User: user}
	err := s.session.Query(`SELECT joined_seq, removed_seq, read_seq FROM members WHERE conv = ? AND user_id = ?`, conv, user).
		Idempotent(true).ScanContext(ctx, &m.JoinedSeq, &m.RemovedSeq, &m.ReadSeq)
	if errors.Is(err, gocql.ErrNotFound) {
		return m, store.ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("cassandrastore: read membership: %w", err)
	}
	return m, nil
}

// Members implements store.Store.
func (s *Store) Members(ctx context.Context, conv string) ([]store.Membership, error) {
	it := s.session.Query(`SELECT user_id, joined_seq, removed_seq, read_seq FROM members WHERE conv = ?`, conv).
		Idempotent(true).IterContext(ctx)
	var out []store.Membership
	m := store.Membership{Conv: conv}
	for it.Scan(&m.User, &m.JoinedSeq, &m.RemovedSeq, &m.ReadSeq) {
		if m.Current() {
			out = append(out, m)
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("cassandrastore: read members: %w", err)
	}
	return out, nil
}

// UserConversations implements store.Store: one partition read for the
// list, then the heads, fetched in parallel.
func (s *Store) UserConversations(ctx context.Context, user string) ([]store.UserConversation, error) {
	it := s.session.Query(`SELECT conv, joined_seq, removed_seq, read_seq FROM user_conversations WHERE user_id = ?`, user).
		Idempotent(true).IterContext(ctx)
	var out []store.UserConversation
	var conv string
	var joined, removed, read int64
	for it.Scan(&conv, &joined, &removed, &read) {
		if joined > 0 && removed == 0 {
			out = append(out, store.UserConversation{Conversation: store.Conversation{Conv: conv}, JoinedSeq: joined, ReadSeq: read})
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("cassandrastore: read conversation list: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, s.cfg.Parallelism)
	errs := make([]error, len(out))
	var wg sync.WaitGroup
	for i := range out {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := s.Conversation(ctx, out[i].Conv)
			if err != nil {
				errs[i] = fmt.Errorf("conversation %s of user %s: %w", out[i].Conv, user, err)
				cancel()
				return
			}
			out[i].Conversation = h
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
