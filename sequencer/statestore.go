package sequencer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// stateStore is the sequencer's local copy of the changelog of the
// partitions it owns: a Pebble store of the latest value of every
// changelog key, so that a conversation's state can be loaded when a
// command needs it instead of every conversation being held in memory.
//
// It holds committed state only. A partition's keys are written when the
// partition is restored from the changelog; after that, what changed in a
// conversation is written when its state leaves memory (partition.evict)
// and when the store lags the changelog too far (partition.sync), each
// after the transaction commits. So for every conversation not in memory
// the store has its committed state, up to the changelog records the
// Sequencer notes it lacks (syncState), which a restore after an abort
// reads. It is a cache of the log, never a second record of it, and has
// no WAL: a partition revoked, or restored with nothing to go on, starts
// from an empty range, and the store is emptied when opened unless the
// last run ended with a checkpoint (see saveCheckpoint), which says how
// far each kept partition's range follows the changelog.
//
// A key is the partition (4 bytes, big-endian) followed by the changelog
// key; the changelog's tombstones delete.
type stateStore struct {
	db   *pebble.DB
	dir  string
	temp bool // dir was made for this store and goes with it
	// resumed is the checkpoint found when the store was opened, its
	// partitions' ranges kept; nil when the store was emptied.
	resumed *checkpoint
}

// stateMarker is the key that says a Pebble store is a sequencer's state:
// outside every partition's range (partitions are not negative).
// checkpointKey is the key of the last run's checkpoint: in the range of a
// partition that cannot be (partitions are below the count, a positive
// int32), among the keys that every version of claim empties, so that an
// older version run on the directory drops it.
var (
	stateMarker   = []byte("\xffparley-sequencer-state")
	checkpointKey = partitionKey(math.MaxInt32, "checkpoint")
)

// checkpoint is what a run that ended cleanly leaves in the store: for the
// changelog topic it followed (its topic id and partition count), each
// partition whose range holds the committed state of every changelog
// record before From; records from there on were written at Since or
// later (Unix ms), and are read when the partition is next restored.
type checkpoint struct {
	TopicID    string                        `json:"topic_id"`
	Partitions int32                         `json:"partitions"`
	Parts      map[int32]checkpointPartition `json:"parts"`
}

type checkpointPartition struct {
	From  int64 `json:"from"`
	Since int64 `json:"since"`
}

// openStateStore opens the state store in dir, or in a new temporary
// directory when dir is "", and empties it but for the partitions of a
// checkpoint the last run left (see claim). A directory that holds some
// other Pebble store is refused rather than emptied.
func openStateStore(dir string, log *slog.Logger) (*stateStore, error) {
	st := &stateStore{dir: dir}
	if dir == "" {
		var err error
		if st.dir, err = os.MkdirTemp("", "parley-sequencer-"); err != nil {
			return nil, fmt.Errorf("sequencer: state directory: %w", err)
		}
		st.temp = true
	}
	cache := pebble.NewCache(16 << 20)
	defer cache.Unref() // the DB holds its own reference
	db, err := pebble.Open(st.dir, &pebble.Options{
		Cache: cache, MemTableSize: 8 << 20, DisableWAL: true, Logger: pebbleLogger{log},
	})
	if err != nil {
		st.removeTemp()
		return nil, fmt.Errorf("sequencer: state store %s: %w", st.dir, err)
	}
	st.db = db
	if err := st.claim(); err != nil {
		st.Close()
		return nil, fmt.Errorf("sequencer: state store %s: %w", st.dir, err)
	}
	return st, nil
}

// claim marks the store as a sequencer's, after checking that it is one
// or is empty, and empties it but for the ranges of the partitions in the
// last run's checkpoint, which it takes out of the store (into resumed):
// from here on the store changes, and a run that does not end cleanly
// leaves no checkpoint, so the next open empties it all.
func (st *stateStore) claim() error {
	var cp *checkpoint
	_, closer, err := st.db.Get(stateMarker)
	switch {
	case err == nil:
		closer.Close()
		if cp, err = st.readCheckpoint(); err != nil {
			return err
		}
	case errors.Is(err, pebble.ErrNotFound):
		it, err := st.db.NewIter(nil)
		if err != nil {
			return err
		}
		used := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		if used {
			return errors.New("the directory holds a store that is not a sequencer's state; give the sequencer a directory of its own")
		}
	default:
		return err
	}
	b := st.db.NewBatch()
	defer b.Close()
	// Every partition's keys but the kept ones': partition keys' first
	// byte is below 0x80, and a kept partition p's range is [p, p+1).
	var kept []int32
	if cp != nil {
		kept = slices.Sorted(maps.Keys(cp.Parts))
	}
	lo := partitionKey(0, "")
	for _, p := range kept {
		if hi := partitionKey(p, ""); bytes.Compare(lo, hi) < 0 {
			if err := b.DeleteRange(lo, hi, nil); err != nil {
				return err
			}
		}
		lo = partitionKey(p+1, "")
	}
	if err := b.DeleteRange(lo, []byte{0x80}, nil); err != nil {
		return err
	}
	if err := errors.Join(b.Delete(checkpointKey, nil), b.Set(stateMarker, nil, nil)); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	if cp != nil {
		// On disk before anything else changes the store: without a WAL,
		// what reaches the disk is the flushed memtables, in order.
		if err := st.db.Flush(); err != nil {
			return err
		}
	}
	st.resumed = cp
	return nil
}

// readCheckpoint returns the checkpoint in the store, nil if none.
func (st *stateStore) readCheckpoint() (*checkpoint, error) {
	v, closer, err := st.db.Get(checkpointKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	var cp checkpoint
	if err := json.Unmarshal(v, &cp); err != nil {
		return nil, nil // not one this version wrote: start from nothing
	}
	for p := range cp.Parts {
		if p < 0 || p >= cp.Partitions {
			return nil, nil
		}
	}
	return &cp, nil
}

// saveCheckpoint writes cp, after everything written before it, and
// flushes the store to disk: the next open keeps cp's partitions.
func (st *stateStore) saveCheckpoint(cp *checkpoint) error {
	v, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if err := st.db.Set(checkpointKey, v, pebble.NoSync); err != nil {
		return err
	}
	return st.db.Flush()
}

// Close closes the store, removing its directory if it was temporary. A
// checkpoint the store was opened with and nobody took (a sequencer that
// never ran) is written back: nothing has changed the store since.
func (st *stateStore) Close() error {
	var err error
	if st.resumed != nil && !st.temp {
		err = st.saveCheckpoint(st.resumed)
	}
	err = errors.Join(err, st.db.Close())
	st.removeTemp()
	return err
}

func (st *stateStore) removeTemp() {
	if st.temp {
		os.RemoveAll(st.dir)
	}
}

// partitionKey is key in partition p's range.
func partitionKey(p int32, key string) []byte {
	return append(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(key)), uint32(p)), key...)
}

// clear deletes every key of the partitions.
func (st *stateStore) clear(parts ...int32) error {
	if len(parts) == 0 {
		return nil // a restore from what the store has: nothing to clear
	}
	b := st.db.NewBatch()
	defer b.Close()
	for _, p := range parts {
		if err := b.DeleteRange(partitionKey(p, ""), partitionKey(p+1, ""), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.NoSync)
}

// loadConv feeds every changelog record of conv in partition p to add, in
// key order; add may keep the values.
func (st *stateStore) loadConv(p int32, conv string, add func(key string, value []byte) error) error {
	// Conversation ids have no '/', so the range conv/ … conv0 holds this
	// conversation's keys and no other's.
	it, err := st.db.NewIter(&pebble.IterOptions{LowerBound: partitionKey(p, conv+"/"), UpperBound: partitionKey(p, conv+"0")})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		// A copy: the iterator's buffer changes at Next, and add keeps
		// the value. Never nil (a stored empty value; tombstones are
		// deletions).
		if err := add(string(it.Key()[4:]), append([]byte{}, v...)); err != nil {
			it.Close()
			return err
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// put adds to b the writes that bring the store's copy of c in partition
// p up to date: its head, the members changed since the store had it, the
// chunks sealed since and deletions of the stored chunks that left the
// window. Sealed chunks never change, so the rest is already there.
func (st *stateStore) put(b *pebble.Batch, p int32, c *convState) error {
	conv := c.head.Conv
	set := func(key string, r stateRecord) error {
		v, err := encode(r)
		if err != nil {
			return err
		}
		return b.Set(partitionKey(p, key), v, nil)
	}
	if err := set(headKey(conv), headRecord{c.head, c.pending}); err != nil {
		return err
	}
	for u := range c.staleMembers {
		var err error
		if m := c.members[u]; m != nil {
			err = set(memberKey(conv, u), vtRecord{m})
		} else {
			err = b.Delete(partitionKey(p, memberKey(conv, u)), nil)
		}
		if err != nil {
			return err
		}
	}
	for i := len(c.chunks) - 1; i >= 0 && c.chunks[i].n >= c.storedNext; i-- {
		if err := set(chunkKey(conv, c.chunks[i].n), chunkRecord{c.chunks[i]}); err != nil {
			return err
		}
	}
	for n := c.storedFirst; n < min(c.storedNext, c.head.FirstChunk); n++ {
		if err := b.Delete(partitionKey(p, chunkKey(conv, n)), nil); err != nil {
			return err
		}
	}
	return nil
}

// restoreBytes is how much a restore gathers in a batch before committing
// it.
const restoreBytes = 4 << 20

// restoreWriter writes changelog records read at a restore into the store.
type restoreWriter struct {
	st *stateStore
	b  *pebble.Batch
}

func (w *restoreWriter) add(p int32, key, value []byte) error {
	if w.b == nil {
		w.b = w.st.db.NewBatch()
	}
	k := partitionKey(p, string(key))
	var err error
	if value == nil {
		err = w.b.Delete(k, nil)
	} else {
		err = w.b.Set(k, value, nil)
	}
	if err == nil && w.b.Len() >= restoreBytes {
		err = w.finish()
	}
	return err
}

// discard drops what is gathered and not yet committed.
func (w *restoreWriter) discard() {
	if w.b != nil {
		w.b.Close()
		w.b = nil
	}
}

// finish commits what is gathered.
func (w *restoreWriter) finish() error {
	if w.b == nil {
		return nil
	}
	err := w.b.Commit(pebble.NoSync)
	w.b.Close()
	w.b = nil
	return err
}

// pebbleLogger sends Pebble's errors to the sequencer's log.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(string, ...any) {}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("state store: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
