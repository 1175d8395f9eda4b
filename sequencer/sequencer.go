package sequencer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/internal/metrics"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Config configures a Sequencer. Zero fields take the documented defaults.
type Config struct {
	Kafka kafka.Config
	// Group is the consumer group; default "parley-sequencer".
	Group string
	// NodeID names this sequencer instance; its transactional id is derived
	// from it. Give each instance a stable, unique id (a restarted instance
	// with the same id fences its predecessor's open transaction at once).
	// Default: hostname-pid.
	NodeID string
	// WindowMinAge and WindowMinEntries size the dedup/edit window;
	// defaults 24h and 10,000.
	WindowMinAge     time.Duration
	WindowMinEntries int
	// StateDir is where the local copy of the owned partitions' state
	// lives (a Pebble store filled from the changelog at every
	// assignment; see schema/README.md). When Run returns it leaves a
	// checkpoint there, and the next run on the directory restores a
	// partition it is assigned from the store and the changelog records
	// written since, not from the whole changelog; without one (a crash)
	// the store is emptied when opened. One sequencer to a directory; New
	// opens it (Run again if a Run closed it), and Run closes it when it
	// returns; Close closes it if Run is never called. Default: a new
	// temporary directory that Run makes and removes.
	StateDir string
	// StateCacheBytes bounds the estimated memory of the conversations'
	// state kept in memory, shared by the owned partitions; the least
	// recently used leave it and are loaded from StateDir when next
	// needed. Default 256 MiB.
	StateCacheBytes int64
	// StateSyncRecords is how many of a partition's changelog records the
	// state store may lack, at most, before the conversations changed
	// since it had them are written to it (they are written after a
	// minute anyway). After an aborted transaction or a new transaction
	// session, a partition's state is restored from the store and the
	// changelog records it lacks, not from the whole changelog. Default
	// 100,000.
	StateSyncRecords int
	// MaxMembers caps a group's size; default 10,000.
	MaxMembers int
	// MaxBatch caps the commands per transaction; default 10,000.
	MaxBatch int
	// Linger is the least time from the start of one transaction to the
	// start of the next, unless MaxBatch commands are waiting: commands
	// that arrive meanwhile gather into the next one. A transaction costs
	// the log several round trips and a record batch per partition and
	// topic it touches, whatever it holds, and its commit wakes every
	// reader of those topics; at moderate load lingering makes several
	// times fewer transactions. A command that comes after a quiet spell
	// longer than Linger waits for nothing. Default 5ms; negative: none.
	Linger time.Duration
	// SessionTimeout of the group member; default 10s. A member that dies
	// without leaving holds its partitions this long.
	SessionTimeout time.Duration
	// TransactionTimeout; default 15s. A transaction left open by a killed
	// process with another NodeID blocks read_committed readers this long.
	TransactionTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes the sequencer's metrics (parley_sequencer_*,
	// parley_consumer_lag and parley_records_skipped_total with
	// role="sequencer", and its Kafka client's); nil: a private registry
	// nobody scrapes.
	Registerer prometheus.Registerer
	// Now returns the time; default time.Now. For tests.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.Kafka = c.Kafka.WithDefaults()
	if c.Group == "" {
		c.Group = "parley-sequencer"
	}
	if c.NodeID == "" {
		host, _ := os.Hostname()
		c.NodeID = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.WindowMinAge == 0 {
		c.WindowMinAge = 24 * time.Hour
	}
	if c.WindowMinEntries == 0 {
		c.WindowMinEntries = 10000
	}
	if c.StateCacheBytes == 0 {
		c.StateCacheBytes = DefaultStateCacheBytes
	}
	if c.StateSyncRecords == 0 {
		c.StateSyncRecords = DefaultStateSyncRecords
	}
	if c.MaxMembers == 0 {
		c.MaxMembers = 10000
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 10000
	}
	if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	switch {
	case c.WindowMinAge < 0 || c.WindowMinEntries < 0:
		return errors.New("sequencer: the window must not be negative")
	case c.StateCacheBytes < 0 || c.StateSyncRecords < 0:
		return errors.New("sequencer: StateCacheBytes and StateSyncRecords must not be negative")
	case c.MaxMembers < 2:
		return errors.New("sequencer: MaxMembers must be at least 2")
	case c.MaxBatch < 1:
		return errors.New("sequencer: MaxBatch must be positive")
	}
	return nil
}

// DefaultLinger is Config.Linger's default.
const DefaultLinger = 5 * time.Millisecond

// ProduceLinger is how long the sequencer's producer holds a record batch
// that is not full before sending it. A transaction's records count only
// once it commits, and the commit comes after a flush that sends whatever
// is held, so holding them costs the transaction nothing; sending each
// few records as they come instead costs the client and the broker a
// request each time. Full batches go at once.
const ProduceLinger = time.Second

// DefaultStateCacheBytes is Config.StateCacheBytes's default.
const DefaultStateCacheBytes = 256 << 20

// DefaultStateSyncRecords is Config.StateSyncRecords's default.
const DefaultStateSyncRecords = 100_000

// Stats counts what a Sequencer has done since it started. Counts cover
// committed and aborted transactions alike. Undecodable counts the records
// skipped as undecodable (parley_records_skipped_total). StateLoads counts
// the conversations whose state was loaded from the state store, not
// being in memory; RestoredRecords the changelog records read to restore
// partitions' state. Replayed counts the commands skipped as applied
// already (parley_records_skipped_total; see skipApplied).
type Stats struct {
	Commands, Events, Duplicates, Unchanged, Rejected, Undecodable int64
	Committed, Aborted                                             int64
	StateLoads, RestoredRecords                                    int64
	Replayed                                                       int64
}

// Sequencer is the sequencer role.
type Sequencer struct {
	cfg   Config
	rules rules
	log   *slog.Logger

	// parts and store are owned by Run's goroutine (store is opened by New
	// when StateDir is named, else by Run, and closed when Run returns).
	parts map[int32]*partition
	store *stateStore
	// synced holds, for each partition whose range in the store holds
	// committed state, how far the store is behind the changelog. It
	// outlives parts across aborts and new sessions (whose state is
	// restored from the store and the records it lacks), and goes with
	// the partition.
	synced map[int32]*syncState
	// Partition counts of the commands and outcomes topics.
	nparts, nout int32

	// logID is the changelog topic's id, for the state store's checkpoint;
	// confirmed the last time this member is known to have been in the
	// group (the start of its session or of its last committed
	// transaction): no other member can have owned a partition it still
	// holds before then.
	logID     string
	confirmed time.Time

	revokedMu sync.Mutex
	revoked   []int32 // partitions revoked since Run last looked
	revokedAt map[int32]time.Time
	dropAll   bool

	stats struct {
		commands, events, duplicates, unchanged, rejected atomic.Int64
		committed, aborted, loads, restored               atomic.Int64
	}
	skipped *metrics.Skipped
	m       seqMetrics
}

// seqMetrics are the sequencer's Prometheus metrics; the stats above
// count the same for Stats.
type seqMetrics struct {
	reg                                       prometheus.Registerer
	sequenced, duplicate, unchanged, rejected prometheus.Counter // parley_sequencer_commands_total{status}
	events                                    prometheus.Counter
	txSeconds                                 prometheus.Observer
	committed, aborted                        prometheus.Counter // parley_sequencer_transactions_total{result}
	loads, restored                           prometheus.Counter
	cached                                    prometheus.Gauge
	lag                                       *metrics.Lag
}

func newSeqMetrics(reg prometheus.Registerer, group string) (seqMetrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	commands, err := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_sequencer_commands_total",
		Help: "Commands decided, by outcome status (sequenced, duplicate, unchanged, rejected), in committed and aborted transactions alike.",
	}, []string{"status"}))
	if err != nil {
		return seqMetrics{}, err
	}
	events, err := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_sequencer_events_total",
		Help: "Events appended to the events topic, in committed and aborted transactions alike.",
	}))
	if err != nil {
		return seqMetrics{}, err
	}
	txSeconds, err := metrics.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_sequencer_transaction_seconds",
		Help:    "Time from the start of a transaction to its end (commit or abort), producing its records included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms to 8 s
	}))
	if err != nil {
		return seqMetrics{}, err
	}
	txs, err := metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_sequencer_transactions_total",
		Help: "Transactions ended, by result (committed, aborted).",
	}, []string{"result"}))
	if err != nil {
		return seqMetrics{}, err
	}
	loads, err := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_sequencer_state_loads_total",
		Help: "Conversations whose state was loaded from the local state store, not being in memory.",
	}))
	if err != nil {
		return seqMetrics{}, err
	}
	restored, err := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_sequencer_restored_records_total",
		Help: "Changelog records read to restore partitions' state into the local state store.",
	}))
	if err != nil {
		return seqMetrics{}, err
	}
	cached, err := metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_sequencer_state_cached_bytes",
		Help: "Estimated memory of the conversations' state held in memory (bounded by the state cache's size).",
	}))
	if err != nil {
		return seqMetrics{}, err
	}
	lag, err := metrics.NewLag(reg, "sequencer", group)
	if err != nil {
		return seqMetrics{}, err
	}
	return seqMetrics{
		reg:       reg,
		sequenced: commands.WithLabelValues("sequenced"), duplicate: commands.WithLabelValues("duplicate"),
		unchanged: commands.WithLabelValues("unchanged"), rejected: commands.WithLabelValues("rejected"),
		events: events, txSeconds: txSeconds,
		committed: txs.WithLabelValues("committed"), aborted: txs.WithLabelValues("aborted"),
		loads: loads, restored: restored, cached: cached, lag: lag,
	}, nil
}

// New returns a Sequencer; Run starts it.
func New(cfg Config) (*Sequencer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	skipped, err := metrics.NewSkipped(cfg.Registerer, "sequencer", cfg.Kafka.Topics().Commands)
	if err != nil {
		return nil, fmt.Errorf("sequencer: metrics: %w", err)
	}
	m, err := newSeqMetrics(cfg.Registerer, cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("sequencer: metrics: %w", err)
	}
	// A named state directory is opened now, so that a process that
	// starts a sequencer among other roles has it before they take
	// descriptors (connections) of their own.
	var st *stateStore
	if cfg.StateDir != "" {
		if st, err = openStateStore(cfg.StateDir, cfg.Logger); err != nil {
			return nil, err
		}
	}
	return &Sequencer{
		store: st,
		m:     m,
		cfg:   cfg,
		rules: rules{
			windowMinAgeMs:   cfg.WindowMinAge.Milliseconds(),
			windowMinEntries: cfg.WindowMinEntries,
			maxMembers:       cfg.MaxMembers,
		},
		log:       cfg.Logger.With("role", "sequencer", "node", cfg.NodeID),
		parts:     make(map[int32]*partition),
		synced:    make(map[int32]*syncState),
		revokedAt: make(map[int32]time.Time),
		skipped:   skipped,
	}, nil
}

// Stats returns the counters so far.
func (s *Sequencer) Stats() Stats {
	return Stats{
		Commands: s.stats.commands.Load(), Events: s.stats.events.Load(),
		Duplicates: s.stats.duplicates.Load(), Unchanged: s.stats.unchanged.Load(),
		Rejected: s.stats.rejected.Load(), Undecodable: s.skipped.Count(s.cfg.Kafka.Topics().Commands, schema.SkipUndecodable),
		Committed: s.stats.committed.Load(), Aborted: s.stats.aborted.Load(),
		StateLoads: s.stats.loads.Load(), RestoredRecords: s.stats.restored.Load(),
		Replayed: s.skipped.Count(s.cfg.Kafka.Topics().Commands, schema.SkipReplayed),
	}
}

// Close releases what New took (the state store) from a sequencer whose
// Run is never to be called; after Run returns it has nothing to do. Do
// not call it while Run runs.
func (s *Sequencer) Close() error {
	if s.store == nil {
		return nil
	}
	err := s.store.Close()
	s.store = nil
	return err
}

// Run sequences until ctx ends. A transaction session that fails is
// replaced after a pause; Run returns only when ctx ends (nil) or the
// topics cannot be set up.
func (s *Sequencer) Run(ctx context.Context) error {
	t := s.cfg.Kafka.Topics()
	admin, err := kgo.NewClient(s.cfg.Kafka.ClientOpts()...)
	if err != nil {
		return err
	}
	err = kafka.EnsureTopics(ctx, admin, s.cfg.Kafka)
	var nparts, nout int32
	var logID string
	if err == nil {
		nparts, err = kafka.PartitionCount(ctx, admin, t.Commands)
	}
	if err == nil {
		nout, err = kafka.PartitionCount(ctx, admin, t.Outcomes)
	}
	if err == nil {
		var idErr error
		if logID, idErr = kafka.TopicID(ctx, admin, t.SequencerState); idErr != nil {
			s.log.Warn("no id for the changelog topic: the state store is not kept for the next run", "err", idErr)
		}
	}
	admin.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return fmt.Errorf("sequencer: %w", err)
	}
	s.nparts, s.nout, s.logID = nparts, nout, logID
	if s.store == nil { // no StateDir (a temporary one), or a second Run
		if s.store, err = openStateStore(s.cfg.StateDir, s.log); err != nil {
			return err
		}
	}
	s.resume()
	defer func() {
		s.saveCheckpoint()
		if err := s.store.Close(); err != nil {
			s.log.Warn("closing the state store", "err", err)
		}
		s.store = nil
	}()
	for ctx.Err() == nil {
		err := s.session(ctx)
		if ctx.Err() != nil {
			break
		}
		s.log.Error("transaction session failed; starting a new one", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (s *Sequencer) onRevoked(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.revokedMu.Lock()
	defer s.revokedMu.Unlock()
	now := time.Now()
	for _, ps := range lost {
		s.revoked = append(s.revoked, ps...)
		for _, p := range ps {
			if _, ok := s.revokedAt[p]; !ok {
				s.revokedAt[p] = now
			}
		}
	}
}

// resume takes the checkpoint the state store was opened with, if any:
// each of its partitions is restored, when next assigned, from the store
// and the changelog records after the checkpoint's offset, unless the
// changelog is another topic than the one checkpointed (deleted and made
// again) or has another partition count, when the kept ranges are
// emptied.
func (s *Sequencer) resume() {
	cp := s.store.resumed
	s.store.resumed = nil
	if cp == nil {
		return
	}
	parts := slices.Sorted(maps.Keys(cp.Parts))
	if cp.TopicID != s.logID || cp.Partitions != s.nparts {
		why := "the state store's checkpoint is of another changelog; restoring from the changelog alone"
		if s.logID == "" {
			why = "the changelog topic's id is unknown; restoring from the changelog alone"
		}
		s.log.Warn(why, "checkpoint_topic_id", cp.TopicID, "topic_id", s.logID, "checkpoint_partitions", cp.Partitions, "partitions", s.nparts)
		if err := s.store.clear(parts...); err != nil {
			s.log.Warn("clearing the state store", "err", err)
			s.forgetStore()
		}
		return
	}
	for p, c := range cp.Parts {
		// The records after From may be another member's, written at Since
		// or later: the store lacks them all, whatever their end.
		s.synced[p] = &syncState{from: c.From, end: math.MaxInt64, lagSince: time.UnixMilli(c.Since)}
	}
	s.log.Info("state store kept from the last run", "partitions", parts)
}

// saveCheckpoint, when Run ends, writes the changed conversations of the
// partitions whose committed state is in memory to the state store, and
// then a checkpoint of every partition whose range in the store follows
// the changelog, so that the next run on StateDir restores only what the
// store lacks. The records after a partition's checkpointed offset are
// another member's, written after this one stopped owning the partition:
// after its revocation, and after the last time it knew itself a member
// (its group can have dropped it unnoticed), which bound their age. A
// partition revoked since Run last looked (or by the group session's end)
// is checkpointed too. Then no state is held in memory.
func (s *Sequencer) saveCheckpoint() {
	defer func() {
		s.revokedMu.Lock()
		s.revoked, s.dropAll = nil, false
		clear(s.revokedAt)
		s.revokedMu.Unlock()
		clear(s.parts)
		clear(s.synced)
	}()
	if s.store.temp || s.logID == "" {
		return // nobody opens a temporary store again
	}
	cp := &checkpoint{TopicID: s.logID, Partitions: s.nparts, Parts: make(map[int32]checkpointPartition, len(s.synced))}
	s.revokedMu.Lock()
	revokedAt := maps.Clone(s.revokedAt)
	s.revokedMu.Unlock()
	for p, ss := range s.synced {
		if part := s.parts[p]; part != nil && ss.from < ss.end {
			if err := part.sync(); err != nil {
				s.log.Warn("writing the state store at the end; the partition will be restored from the changelog alone", "partition", p, "err", err)
				continue
			}
			ss.from = ss.end
		}
		// The earliest of the times that apply (for a partition from the
		// last checkpoint, never assigned in this run, its time from
		// there is among them).
		var since time.Time
		earliest := func(t time.Time) {
			if !t.IsZero() && (since.IsZero() || t.Before(since)) {
				since = t
			}
		}
		earliest(s.confirmed)
		earliest(revokedAt[p])
		if ss.from < ss.end {
			earliest(ss.lagSince)
		}
		if time.Since(since) >= maxRestoreLag {
			continue // of no use: the next open empties its range
		}
		cp.Parts[p] = checkpointPartition{From: ss.from, Since: since.UnixMilli()}
	}
	if err := s.store.saveCheckpoint(cp); err != nil {
		s.log.Warn("writing the state store's checkpoint; the next run restores from the changelog alone", "err", err)
		return
	}
	s.log.Info("state store checkpointed", "partitions", slices.Sorted(maps.Keys(cp.Parts)))
}

// forgetRevoked drops the state of partitions this member no longer owns
// (or all state in memory after an abort): a partition's state is valid
// only while owned continuously since its restore.
func (s *Sequencer) forgetRevoked() {
	s.revokedMu.Lock()
	defer s.revokedMu.Unlock()
	for p := range s.parts {
		if s.dropAll || slices.Contains(s.revoked, p) {
			delete(s.parts, p)
		}
	}
	// A revoked partition's copy in the store goes too: another member
	// writes its changelog now, and it need not take up the disk. After
	// an abort the store still holds committed state.
	for _, p := range s.revoked {
		delete(s.synced, p)
		delete(s.revokedAt, p)
	}
	if len(s.revoked) == 0 {
		s.dropAll = false
		return
	}
	if err := s.store.clear(s.revoked...); err != nil {
		s.log.Warn("clearing revoked partitions from the state store", "partitions", s.revoked, "err", err)
	}
	s.revoked, s.dropAll = nil, false
}

func (s *Sequencer) session(ctx context.Context) error {
	t := s.cfg.Kafka.Topics()
	s.confirmed = time.Now() // before it can own anything
	opts := s.cfg.Kafka.ClientOpts(append(metrics.KafkaClient(s.m.reg, "sequencer", "transactions"),
		kgo.TransactionalID("parley-sequencer-"+s.cfg.NodeID),
		kgo.TransactionTimeout(s.cfg.TransactionTimeout),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(t.Commands),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onRevoked),
		kgo.ProducerLinger(ProduceLinger),
		kgo.RecordRetries(10),
	)...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer sess.Close()
	s.m.lag.Watch(sess.Client())
	defer s.m.lag.Watch(nil)
	// A new session starts from the committed offsets: no state in memory
	// carries over (the store's does: it holds only committed state).
	s.dropAllState()

	var lastBegan time.Time
	for {
		fetches := sess.PollRecords(ctx, s.cfg.MaxBatch)
		if ctx.Err() == nil && fetches.NumRecords() > 0 {
			fetches = s.gather(ctx, sess, fetches, lastBegan.Add(s.cfg.Linger))
		}
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			s.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		})
		s.forgetRevoked()
		if fetches.NumRecords() == 0 {
			continue
		}
		if s.skipApplied(fetches); fetches.NumRecords() == 0 {
			continue
		}
		if err := s.restore(ctx, fetches); err != nil {
			// Nothing was produced yet: end the (empty) transaction as an
			// abort so the records are polled again.
			s.log.Error("restoring state failed", "err", err)
			endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TransactionTimeout)
			_, endErr := sess.End(endCtx, kgo.TryAbort)
			cancel()
			if endErr != nil {
				return endErr
			}
			s.dropAllState()
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		began := time.Now()
		lastBegan = began
		// The transaction is finished even when ctx ends meanwhile: records
		// are produced and the transaction ended under endCtx. A record
		// failed by a cancelled context could otherwise be missing from a
		// transaction that commits the offsets of its command, and an
		// abandoned transaction would hold back every read_committed
		// reader of the partitions it touched until it timed out.
		endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TransactionTimeout)
		var produceErr atomic.Pointer[error]
		var logMu sync.Mutex
		logEnds := make(map[int32]int64) // partition -> offset after its last changelog record
		produce := func(r *kgo.Record) {
			sess.Produce(endCtx, r, func(r *kgo.Record, err error) {
				if err != nil {
					produceErr.CompareAndSwap(nil, &err)
				} else if r.Topic == t.SequencerState {
					logMu.Lock()
					logEnds[r.Partition] = max(logEnds[r.Partition], r.Offset+1)
					logMu.Unlock()
				}
			})
		}
		processErr := s.process(fetches, produce)
		if processErr != nil {
			produceErr.CompareAndSwap(nil, &processErr)
		}
		// Every record's fate is known before deciding: commit only if all
		// of them reached the broker.
		if err := sess.Client().Flush(endCtx); err != nil {
			produceErr.CompareAndSwap(nil, &err)
		}
		end := kgo.TryCommit
		if produceErr.Load() != nil {
			end = kgo.TryAbort
		}
		committed, err := sess.End(endCtx, end)
		cancel()
		s.m.txSeconds.Observe(time.Since(began).Seconds())
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("transaction ended", "committed", committed, "err", err, "records", describe(fetches))
		}
		if !committed {
			s.stats.aborted.Add(1)
			s.m.aborted.Inc()
			s.dropAllState()
			if processErr != nil {
				// The state (perhaps the store's) could not be read or
				// written: restore from the changelog alone.
				s.forgetStore()
			}
			if e := produceErr.Load(); e != nil {
				s.log.Warn("transaction aborted", "err", *e)
			}
		} else {
			s.stats.committed.Add(1)
			s.m.committed.Inc()
			s.confirmed = began // the commit checked the member's generation
			s.afterCommit(logEnds)
		}
		if err != nil {
			return fmt.Errorf("end transaction: %w", err)
		}
	}
}

// skipApplied takes out of fetches the commands that a partition's state
// in memory holds already, which the Kafka client hands back after going
// back in the log (see kafka.SkipReplays). Applied again, a command older
// than its conversation's dedup window would be sequenced twice. A
// partition's state only ever moves forward from where it was restored,
// which matches the committed offsets: after an abort or a revocation it
// is dropped, and with it this check, until commands are applied to it
// again.
func (s *Sequencer) skipApplied(fetches kgo.Fetches) {
	kafka.SkipReplays(fetches, func(_ string, p int32) (int64, bool) { return s.parts[p].applied() }, s.skipped.Replays(s.log))
}

// gather polls for more commands to go with fetches until the deadline
// passes or MaxBatch commands are in hand.
func (s *Sequencer) gather(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches, deadline time.Time) kgo.Fetches {
	for n := fetches.NumRecords(); n < s.cfg.MaxBatch && time.Now().Before(deadline); n = fetches.NumRecords() {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		more := sess.PollRecords(pctx, s.cfg.MaxBatch-n)
		cancel()
		if ctx.Err() != nil {
			break // stopping
		}
		if more.NumRecords() == 0 && pctx.Err() != nil {
			// The poll's own deadline passed with nothing; only errors the
			// broker reported are worth a word.
			more.EachError(func(topic string, p int32, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					s.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
				}
			})
			break
		}
		fetches = append(fetches, more...)
	}
	return fetches
}

func (s *Sequencer) dropAllState() {
	s.revokedMu.Lock()
	s.dropAll = true
	s.revokedMu.Unlock()
	s.forgetRevoked()
}

// restore loads the state of every partition in fetches that has none:
// into the state store, from the changelog records it lacks (all of them
// for a partition it has nothing of).
func (s *Sequencer) restore(ctx context.Context, fetches kgo.Fetches) error {
	var missing []int32
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		// A partition can come in more than one fetch (see gather).
		if len(p.Records) > 0 && s.parts[p.Partition] == nil && !slices.Contains(missing, p.Partition) {
			missing = append(missing, p.Partition)
		}
	})
	if len(missing) == 0 {
		return nil
	}
	start := time.Now()
	var lagLimit time.Duration // how old a tail may be and still be read alone
	if slices.ContainsFunc(missing, func(p int32) bool { return s.synced[p] != nil }) {
		lagLimit = s.restoreLag(ctx)
	}
	from := make(map[int32]int64, len(missing))
	var fresh []int32
	for _, p := range missing {
		if ss := s.synced[p]; ss != nil && ss.usable(start, lagLimit) {
			from[p] = ss.from
		} else {
			from[p] = 0 // below the start: from the start
			fresh = append(fresh, p)
			delete(s.synced, p)
		}
	}
	if err := s.store.clear(fresh...); err != nil {
		return fmt.Errorf("clearing the state store: %w", err)
	}
	// Records already in the store may come again: applied in log order,
	// the last value of each key wins, which is its committed state.
	w := restoreWriter{st: s.store}
	ends := make(map[int32]int64, len(missing))
	var n int64
	oldest := start.Add(-lagLimit)
	err := kafka.ReadFrom(ctx, s.cfg.Kafka.ClientOpts(), s.cfg.Kafka.Topics().SequencerState, from, func(r *kgo.Record) error {
		if _, seen := ends[r.Partition]; !seen && from[r.Partition] > 0 && r.Timestamp.Before(oldest) {
			// The tail is older than its syncState said (its records'
			// times are the last word): not to be trusted alone.
			delete(s.synced, r.Partition)
			return fmt.Errorf("partition %d: the changelog records the state store lacks start at %v, too long ago to read them alone; restoring the partition from the start",
				r.Partition, r.Timestamp)
		}
		n++
		ends[r.Partition] = r.Offset + 1
		return w.add(r.Partition, r.Key, r.Value)
	})
	if err == nil {
		err = w.finish()
	}
	s.stats.restored.Add(n)
	s.m.restored.Add(float64(n))
	if err != nil {
		// The partitions stay missing and are restored again: a fresh one
		// from the start, another from where it was (a prefix of what
		// it lacks changes nothing the rest does not), or from the start
		// if its log no longer holds that (or its tail was too old).
		var gone *kafka.RangeError
		if errors.As(err, &gone) {
			for _, p := range gone.Partitions {
				delete(s.synced, p)
			}
		}
		w.discard()
		return err
	}
	for _, p := range missing {
		end := max(from[p], ends[p])
		s.synced[p] = &syncState{from: end, end: end}
		s.parts[p] = newStoredPartition(s.rules, s.store, p)
	}
	s.log.Info("restored state", "partitions", missing, "from_start", fresh, "records", n, "took", time.Since(start))
	return nil
}

// syncState is how far a partition's range in the state store is behind
// its changelog: the store has the committed state of every record before
// from; records from there to end (the offset after the last one known
// committed) may be missing, the oldest since lagSince. Those are in
// memory while the partition's state is, and restored from the changelog
// when it is not.
type syncState struct {
	from, end int64
	lagSince  time.Time
}

// maxSyncLag is how long the state store may lack a partition's changelog
// records, at most, before the changed conversations are written to it;
// and maxRestoreLag how old the oldest lacking record may be, at most, for
// a restore to read only those (see restoreLag).
const (
	maxSyncLag    = time.Minute
	maxRestoreLag = time.Hour
)

// usable reports whether the store and the records it lacks still give the
// committed state at now, when the oldest lacking record may be lag old.
func (ss *syncState) usable(now time.Time, lag time.Duration) bool {
	return ss.from == ss.end || now.Sub(ss.lagSince) < lag
}

// restoreLag is how old the oldest changelog record the state store lacks
// may be for a restore to read only the records it lacks: maxRestoreLag,
// or half the changelog's delete.retention.ms where that is shorter. A
// tombstone older than delete.retention.ms may be gone from a compacted
// changelog, and the store would keep what it deleted. Zero (every restore
// reads the whole changelog) when the broker cannot say.
func (s *Sequencer) restoreLag(ctx context.Context) time.Duration {
	topic := s.cfg.Kafka.Topics().SequencerState
	cl, err := kgo.NewClient(s.cfg.Kafka.ClientOpts()...)
	var retention time.Duration
	if err == nil {
		retention, err = kafka.DeleteRetention(ctx, cl, topic)
		cl.Close()
	}
	if err != nil {
		s.log.Warn("the changelog's delete.retention.ms is unknown: restoring from the whole changelog", "topic", topic, "err", err)
		return 0
	}
	if lag := retention / 2; lag < maxRestoreLag {
		s.log.Warn("the changelog's delete.retention.ms is short: restoring from the whole changelog once the state store lacks records older than half of it",
			"topic", topic, "delete_retention", retention, "want_at_least", 2*maxRestoreLag)
		return lag
	}
	return maxRestoreLag
}

// forgetStore makes every partition's next restore start from an empty
// range and the whole changelog.
func (s *Sequencer) forgetStore() {
	clear(s.synced)
}

// afterCommit notes the changelog records a committed transaction wrote
// (ends: partition -> offset after its last one), writes the changed
// conversations to the state store of each partition that lacks too many
// or too old records, and brings each partition's cache within its share
// of the budget. A partition whose state cannot be written to the store is
// forgotten, to be restored from the changelog alone when its commands
// next come.
func (s *Sequencer) afterCommit(ends map[int32]int64) {
	now := time.Now()
	budget := s.cfg.StateCacheBytes / int64(max(1, len(s.parts)))
	var cached int64
	for p, part := range s.parts {
		ss := s.synced[p] // restore made it with the partition
		if end, ok := ends[p]; ok && end > ss.end {
			if ss.from == ss.end {
				ss.lagSince = now
			}
			ss.end = end
		}
		var err error
		if ss.end-ss.from >= int64(s.cfg.StateSyncRecords) || ss.from < ss.end && now.Sub(ss.lagSince) >= maxSyncLag {
			if err = part.sync(); err == nil {
				ss.from = ss.end
			}
		}
		if err == nil {
			err = part.evict(budget)
		}
		if err != nil {
			s.log.Error("writing the state store; the partition's state will be restored from the changelog", "partition", p, "err", err)
			delete(s.parts, p)
			delete(s.synced, p)
			continue
		}
		cached += part.bytes
	}
	s.m.cached.Set(float64(cached))
}

// outcomeKey identifies one connector's reply partition.
type outcomeKey struct {
	node      string
	partition int32
}

// decide is the verdict on one record of the commands topic, found on
// partition (of nparts) at now (Unix ms), against that partition's state
// part. A value that is not a Command gets an error wrapping
// schema.ErrUndecodable and nothing else: no outcome (there is nowhere to
// send one). A conversation whose state cannot be loaded from the state
// store gets another error, which must end the transaction unfinished.
// Otherwise decide returns the command, its outcome (never nil)
// and the event to append (nil unless the outcome is SEQUENCED), and part
// holds the change in memory. A record whose key is not its command's
// conversation, or that sits on another partition than the key's, is
// rejected as MALFORMED: it could give one conversation two writers.
//
// The command, event and outcome may share value's memory
// (schema.DecodeSharedCommand): they are used while value is, within the
// transaction, and part keeps copies only (see partition.apply). The
// command is decoded into scratch (reset first), which the caller may use
// again for the next record once it is done with this one's command: no
// event, outcome or state refers to it.
func decide(scratch *parleyv1.Command, part *partition, key, value []byte, partition, nparts int32, now int64) (*parleyv1.Command, *parleyv1.Event, *parleyv1.Outcome, error) {
	cmd := scratch
	if err := schema.DecodeSharedCommand(value, cmd); err != nil {
		return nil, nil, nil, err
	}
	switch cmd.Body.(type) {
	case *parleyv1.Command_Create, *parleyv1.Command_AddMembers, *parleyv1.Command_RemoveMembers:
		// Rare, and the state keeps much of them: decoded again, copying.
		var err error
		if cmd, err = schema.DecodeCommand(value); err != nil {
			return nil, nil, nil, err
		}
	}
	switch {
	case len(key) == 0 || string(key) != cmd.Conv:
		return cmd, nil, reject(cmd, parleyv1.Reason_REASON_MALFORMED, "record key %q is not the conversation %q", clip(string(key)), clip(cmd.Conv)), nil
	case kafka.KeyPartition(key, nparts) != partition:
		return cmd, nil, reject(cmd, parleyv1.Reason_REASON_MALFORMED, "conversation %q belongs on partition %d, not %d (use the murmur2 partitioner)",
			clip(cmd.Conv), kafka.KeyPartition(key, nparts), partition), nil
	}
	if schema.ValidConvID(cmd.Conv) { // an invalid one is rejected by apply
		if err := part.ensure(cmd.Conv); err != nil {
			return cmd, nil, nil, err
		}
	}
	ev, out := part.apply(cmd, now)
	return cmd, ev, out, nil
}

// process decides every command in fetches and produces the events,
// changelog records and outcome batches of the transaction. Partitions
// share no state (a conversation lives on one), so a transaction of at
// least parallelMin commands is decided on up to GOMAXPROCS goroutines;
// each partition's records are decided in log order by one goroutine, so
// each conversation's events are produced in seq order. produce is called
// from those goroutines.
func (s *Sequencer) process(fetches kgo.Fetches, produce func(*kgo.Record)) error {
	now := s.cfg.Now().UnixMilli()
	work := byPartition(fetches)
	done := make([]decided, len(work))
	workers := 1
	if fetches.NumRecords() >= parallelMin {
		workers = runtime.GOMAXPROCS(0)
	}
	parallel(len(work), workers, func(i int) { done[i] = s.decidePartition(work[i], now, produce) })
	var tally counts
	var err error
	var loads int64
	for _, d := range done {
		tally.add(d.counts)
		loads += d.loads
		if err == nil {
			err = d.err
		}
	}
	s.count(tally)
	s.stats.loads.Add(loads)
	s.m.loads.Add(float64(loads))
	return err
}

// partitionWork is one partition's records in a transaction, in log
// order: a partition can come in several fetches (see gather).
type partitionWork struct {
	partition int32
	runs      [][]*kgo.Record
}

func byPartition(fetches kgo.Fetches) []partitionWork {
	var work []partitionWork
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		i := slices.IndexFunc(work, func(w partitionWork) bool { return w.partition == fp.Partition })
		if i < 0 {
			i = len(work)
			work = append(work, partitionWork{partition: fp.Partition})
		}
		work[i].runs = append(work[i].runs, fp.Records)
	})
	return work
}

// parallelMin is the least number of commands in a transaction that are
// decided on more than one goroutine. A command takes a few microseconds;
// below some hundreds, handing partitions to other goroutines (which may
// have to wait for a core the other roles hold) saves little and may add
// latency.
const parallelMin = 512

// parallel calls f(0) … f(n-1) on up to workers goroutines at a time (the
// calling one alone when workers ≤ 1), and returns when every call has.
func parallel(n, workers int, f func(int)) {
	workers = min(n, workers)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// decided is what deciding one partition's records counted, and the
// error that stopped it.
type decided struct {
	counts counts
	loads  int64 // conversations loaded from the state store
	err    error
}

// counts tallies commands by outcome.
type counts struct{ commands, sequenced, duplicate, unchanged, rejected int64 }

func (c *counts) add(o counts) {
	c.commands += o.commands
	c.sequenced += o.sequenced
	c.duplicate += o.duplicate
	c.unchanged += o.unchanged
	c.rejected += o.rejected
}

func (c *counts) outcome(o *parleyv1.Outcome) {
	switch o.Status {
	case parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED:
		c.sequenced++
	case parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE:
		c.duplicate++
	case parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED:
		c.unchanged++
	case parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED:
		c.rejected++
	}
}

// decidePartition decides one partition's records against its state at
// now (Unix ms), and produces their events, then the partition's changelog
// records, then the outcomes, batched by the connector partition they go
// to.
func (s *Sequencer) decidePartition(w partitionWork, now int64, produce func(*kgo.Record)) (d decided) {
	t := s.cfg.Kafka.Topics()
	part := s.parts[w.partition]
	outcomes := make(map[outcomeKey][]*parleyv1.Outcome)
	loads := part.loads
	defer func() { d.loads = part.loads - loads }()
	// The event records and their values are carved from slabs, a few
	// allocations for the partition instead of two an event: the producer
	// holds them only until the transaction ends. An event is about as
	// large as its command, which sizes the value slabs up to valueSlab.
	n, size := 0, 0
	for _, recs := range w.runs {
		n += len(recs)
		for _, r := range recs {
			size += len(r.Value)
		}
	}
	records := make([]kgo.Record, 0, n)
	part.scratch = newDecideScratch(n)
	defer func() { part.scratch = nil }()
	slab := min(size, valueSlab)
	var values []byte
	var scratch parleyv1.Command // each record's command, in turn
	for _, recs := range w.runs {
		for _, r := range recs {
			d.counts.commands++
			cmd, ev, out, derr := decide(&scratch, part, r.Key, r.Value, r.Partition, s.nparts, now)
			if derr != nil && !errors.Is(derr, schema.ErrUndecodable) {
				d.err = fmt.Errorf("partition %d: %w", w.partition, derr)
				return d
			}
			if derr != nil {
				s.skipped.Add(t.Commands, schema.SkipUndecodable)
				s.log.Warn("skipping undecodable command", "partition", r.Partition, "offset", r.Offset, "reason", schema.SkipUndecodable, "err", derr)
				continue
			}
			d.counts.outcome(out)
			if out.Reason == parleyv1.Reason_REASON_MALFORMED {
				s.skipped.Add(t.Commands, schema.SkipMalformed)
				if cmd.GetReplyTo().GetNode() == "" {
					// Nobody waits for this outcome: the log line is all there is.
					s.log.Warn("rejected a malformed command", "partition", r.Partition, "offset", r.Offset, "reason", schema.SkipMalformed, "why", out.Message)
				} else {
					s.log.Debug("rejected a malformed command", "partition", r.Partition, "offset", r.Offset, "reason", schema.SkipMalformed, "why", out.Message)
				}
			}
			if ev != nil {
				m := ev.SizeVT()
				if cap(values)-len(values) < m {
					values = make([]byte, 0, max(slab, m))
				}
				v := values[len(values) : len(values)+m]
				if _, err := ev.MarshalToSizedBufferVT(v); err != nil {
					d.err = err
					return d
				}
				values = values[:len(values)+m]
				records = append(records, kgo.Record{Topic: t.Events, Key: r.Key, Value: v})
				produce(&records[len(records)-1])
			}
			if rt := cmd.ReplyTo; rt != nil && rt.Node != "" {
				if rt.Partition < 0 || rt.Partition >= s.nout || len(rt.Node) > 256 {
					s.log.Warn("command names an invalid reply partition; no outcome sent",
						"partition", r.Partition, "offset", r.Offset, "reply_partition", rt.Partition)
				} else {
					k := outcomeKey{rt.Node, rt.Partition}
					outcomes[k] = append(outcomes[k], out)
				}
			}
		}
		part.next = recs[len(recs)-1].Offset + 1
	}
	// The partition's changes go to the changelog once, after all its
	// commands: a conversation's head is one record however many of its
	// commands the transaction holds.
	var logRecords []kgo.Record // in blocks: the producer holds each until the transaction ends
	d.err = part.flush(func(key, value []byte) {
		if len(logRecords) == cap(logRecords) {
			logRecords = make([]kgo.Record, 0, min(max(2*cap(logRecords), 8), 256))
		}
		logRecords = append(logRecords, kgo.Record{Topic: t.SequencerState, Partition: w.partition, Key: key, Value: value})
		produce(&logRecords[len(logRecords)-1])
	})
	if d.err == nil {
		d.err = produceOutcomes(t.Outcomes, outcomes, produce)
	}
	return d
}

// produceOutcomes produces outcomes as OutcomeBatch records, each below
// maxOutcomeBatchBytes unless a single outcome is larger.
func produceOutcomes(topic string, outcomes map[outcomeKey][]*parleyv1.Outcome, produce func(*kgo.Record)) error {
	for k, outs := range outcomes {
		for len(outs) > 0 {
			n, size := 0, 0
			for n < len(outs) {
				m := outs[n].SizeVT()
				if n > 0 && size+m > maxOutcomeBatchBytes {
					break
				}
				size += m
				n++
			}
			v, err := (&parleyv1.OutcomeBatch{Node: k.node, Outcomes: outs[:n]}).MarshalVT()
			if err != nil {
				return err
			}
			produce(&kgo.Record{Topic: topic, Partition: k.partition, Key: []byte(k.node), Value: v})
			outs = outs[n:]
		}
	}
	return nil
}

// valueSlab is the largest slab event values are encoded into.
const valueSlab = 64 << 10

// maxOutcomeBatchBytes keeps an OutcomeBatch record far below the broker's
// record size limit (1 MiB by default). A single outcome is a few hundred
// bytes at most: every command field it repeats is validated or clipped.
const maxOutcomeBatchBytes = 256 << 10

func (s *Sequencer) count(c counts) {
	s.stats.commands.Add(c.commands)
	s.stats.events.Add(c.sequenced)
	s.stats.duplicates.Add(c.duplicate)
	s.stats.unchanged.Add(c.unchanged)
	s.stats.rejected.Add(c.rejected)
	s.m.sequenced.Add(float64(c.sequenced))
	s.m.events.Add(float64(c.sequenced))
	s.m.duplicate.Add(float64(c.duplicate))
	s.m.unchanged.Add(float64(c.unchanged))
	s.m.rejected.Add(float64(c.rejected))
}

// describe summarises fetches as partition:first-last offsets.
func describe(fetches kgo.Fetches) string {
	var b strings.Builder
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			fmt.Fprintf(&b, "%d:%d-%d ", p.Partition, p.Records[0].Offset, p.Records[n-1].Offset)
		}
	})
	return b.String()
}
