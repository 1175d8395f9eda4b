package sequencer

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

func openTestStateStore(t *testing.T, dir string) *stateStore {
	t.Helper()
	st := openTestStore(t, dir)
	t.Cleanup(func() { st.Close() })
	return st
}

// TestStoredPartitionMatchesMemory: a partition whose cache is far too
// small for its conversations, so that nearly every command loads its
// conversation from the state store, decides exactly as one that keeps
// everything in memory: the same events and outcomes, and the same
// changelog records, byte for byte, through creates, sends, retries of
// old sends, edits and revokes (in and out of the window), reads and
// member changes. At the end, every conversation loaded again equals the
// one in memory.
func TestStoredPartitionMatchesMemory(t *testing.T) {
	r := rules{windowMinAgeMs: 1000, windowMinEntries: 16, maxMembers: 8}
	mem := newPartition(r)
	stored := newStoredPartition(r, openTestStateStore(t, t.TempDir()), 5)
	const budget = 2 << 10 // a conversation or two

	rng := rand.New(rand.NewPCG(7, 11))
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	var convs []string
	for range 12 {
		convs = append(convs, ksuid.New().String())
	}
	sent := map[string][]*parleyv1.Command{} // conv -> sends so far, to retry
	n := 0
	command := func() *parleyv1.Command {
		n++
		if n <= len(convs) { // each conversation's create first, with everyone
			return &parleyv1.Command{Conv: convs[n-1], From: "alice", MsgId: fmt.Sprintf("m%07d", n), Cmid: "create",
				Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: users[1:]}}}
		}
		conv := convs[rng.IntN(len(convs))]
		from := users[rng.IntN(len(users))]
		cmd := &parleyv1.Command{Conv: conv, From: from, MsgId: fmt.Sprintf("m%07d", n), Cmid: fmt.Sprintf("c%07d", n)}
		var body proto.Message
		switch k := rng.IntN(20); {
		case k == 0:
			body = &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: users[:1+rng.IntN(4)]}
		case k == 1 && len(sent[conv]) > 0:
			return proto.CloneOf(sent[conv][rng.IntN(len(sent[conv]))]) // a retry, perhaps long after
		case k == 2:
			body = &parleyv1.Edit{Target: 1 + rng.Int64N(int64(n)), Body: []byte(`"edited"`)}
		case k == 3:
			body = &parleyv1.Revoke{Target: 1 + rng.Int64N(int64(n))}
		case k == 4:
			body, cmd.Cmid = &parleyv1.Read{Seq: 1 + rng.Int64N(int64(n))}, ""
		case k == 5:
			body, cmd.Cmid = &parleyv1.AddMembers{Users: []string{users[rng.IntN(len(users))]}}, ""
		case k == 6 && rng.IntN(4) == 0:
			body, cmd.Cmid = &parleyv1.RemoveMembers{Users: []string{users[rng.IntN(len(users))]}}, ""
		default:
			body = &parleyv1.Send{Kind: "text", Body: []byte(fmt.Sprintf(`{"n":%d}`, n))}
		}
		if _, ok := body.(*parleyv1.Send); ok {
			sent[conv] = append(sent[conv], cmd)
		}
		if _, err := schema.SetBody(cmd, body); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	flush := func(p *partition) []changelogRecord {
		var recs []changelogRecord
		if err := p.flush(func(key, value []byte) { recs = append(recs, changelogRecord{string(key), value}) }); err != nil {
			t.Fatal(err)
		}
		return recs
	}
	now := int64(1_000_000)
	statuses := map[parleyv1.OutcomeStatus]int{}
	for tx := range 400 {
		for range 1 + rng.IntN(12) {
			cmd := command()
			now += 100
			if err := stored.ensure(cmd.Conv); err != nil {
				t.Fatal(err)
			}
			evM, outM := mem.apply(proto.CloneOf(cmd), now)
			evS, outS := stored.apply(proto.CloneOf(cmd), now)
			if !proto.Equal(evM, evS) || !proto.Equal(outM, outS) {
				t.Fatalf("transaction %d, command %v:\nin memory %v %v\nstored    %v %v", tx, cmd, evM, outM, evS, outS)
			}
			statuses[outM.Status]++
		}
		recM, recS := flush(mem), flush(stored)
		if len(recM) != len(recS) {
			t.Fatalf("transaction %d: %d changelog records in memory, %d stored", tx, len(recM), len(recS))
		}
		for i := range recM {
			if recM[i].key != recS[i].key || !bytes.Equal(recM[i].value, recS[i].value) {
				t.Fatalf("transaction %d, changelog record %d: %q %x in memory, %q %x stored", tx, i, recM[i].key, recM[i].value, recS[i].key, recS[i].value)
			}
		}
		if tx%37 == 36 { // now and then, everything to the store
			if err := stored.sync(); err != nil {
				t.Fatal(err)
			}
		}
		if err := stored.evict(budget); err != nil {
			t.Fatal(err)
		}
		if stored.bytes > budget {
			t.Fatalf("transaction %d: %d bytes cached, budget %d", tx, stored.bytes, budget)
		}
	}
	t.Logf("outcomes %v; %d loads", statuses, stored.loads)
	if stored.loads < 300 || statuses[parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE] == 0 || statuses[parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED] < 1000 {
		t.Fatalf("the workload did not exercise loads, retries and sequencing enough")
	}
	// Written back whole, the store holds exactly the records of the
	// state: no chunk that left the window, no removed member.
	if err := stored.evict(0); err != nil {
		t.Fatal(err)
	}
	if len(stored.convs) != 0 {
		t.Fatalf("%d conversations left in memory after evicting all", len(stored.convs))
	}
	want := map[string]string{}
	for _, c := range mem.convs {
		for _, r := range convRecords(t, c) {
			want[r.key] = string(r.value)
		}
	}
	got := map[string]string{}
	it, err := stored.store.db.NewIter(&pebble.IterOptions{LowerBound: partitionKey(stored.id, ""), UpperBound: partitionKey(stored.id+1, "")})
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		got[string(it.Key()[4:])] = string(it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("the store has %q, the state does not", k)
			}
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("the store's %q differs from the state's", k)
			}
		}
		t.FailNow()
	}
	for _, conv := range convs {
		if err := stored.ensure(conv); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := snapshot(stored), snapshot(mem); a != b {
		t.Fatalf("loaded again:\n%s\nin memory:\n%s", a, b)
	}
}

// convRecords is every record of c's state: its head, members and the
// chunks in its window.
func convRecords(t *testing.T, c *convState) []changelogRecord {
	t.Helper()
	var recs []changelogRecord
	add := func(key string, r stateRecord) {
		recs = append(recs, changelogRecord{key, mustEncode(t, r)})
	}
	add(headKey(c.head.Conv), headRecord{c.head, c.pending})
	for u, m := range c.members {
		add(memberKey(c.head.Conv, u), vtRecord{m})
	}
	for _, ch := range c.chunks {
		add(chunkKey(c.head.Conv, ch.n), chunkRecord{ch})
	}
	return recs
}

// TestStateStoreDirectory: the state store empties a directory it used
// before, refuses one holding another store, and removes a temporary
// directory of its own when closed.
func TestStateStoreDirectory(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, dir)
	w := restoreWriter{st: st}
	if err := errors.Join(w.add(2, []byte("c/h"), []byte("x")), w.finish()); err != nil {
		t.Fatal(err)
	}
	keys := func() (got []string, err error) {
		err = st.loadConv(2, "c", func(key string, _ []byte) error { got = append(got, key); return nil })
		return got, err
	}
	if got, err := keys(); err != nil || len(got) != 1 {
		t.Fatalf("stored c/h, loaded %v (%v)", got, err)
	}
	st.Close()
	st = openTestStore(t, dir)
	if got, err := keys(); err != nil || len(got) != 0 {
		t.Fatalf("reopened, loaded %v (%v); want it emptied", got, err)
	}
	st.Close()

	other := t.TempDir()
	db, err := pebble.Open(other, &pebble.Options{Logger: pebbleLogger{slog.Default()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("hsomeone's data"), []byte("keep"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, err := openStateStore(other, slog.Default()); err == nil || !strings.Contains(err.Error(), "not a sequencer's state") {
		if err == nil {
			st.Close()
		}
		t.Fatalf("opened a directory holding another store: %v", err)
	}
	db, err = pebble.Open(other, &pebble.Options{Logger: pebbleLogger{slog.Default()}})
	if err != nil {
		t.Fatal(err)
	}
	v, closer, err := db.Get([]byte("hsomeone's data"))
	if err != nil || string(v) != "keep" {
		t.Fatalf("the other store's data: %q %v", v, err)
	}
	closer.Close()
	db.Close()

	st, err = openStateStore("", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	tmp := st.dir
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temporary state directory %s left behind: %v", tmp, err)
	}
}

// TestCloseReleasesStateDir: a sequencer that never runs gives its named
// state directory back when closed, so that another can open it.
func TestCloseReleasesStateDir(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}, NodeID: "seq-1", StateDir: dir}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil {
		t.Fatal("a second sequencer opened a state directory in use")
	}
	if err := errors.Join(s.Close(), s.Close()); err != nil {
		t.Fatal(err)
	}
	s, err = New(cfg)
	if err != nil {
		t.Fatalf("the directory after Close: %v", err)
	}
	s.Close()
}

// TestStateStoreCheckpoint: a store closed after a checkpoint keeps, when
// opened again, the checkpoint's partitions and empties the others. It
// takes the checkpoint out, so a store changed and closed without one (as
// by a crash) is emptied at the next open; one closed without anybody
// taking the checkpoint (a sequencer that never ran) writes it back.
func TestStateStoreCheckpoint(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, dir)
	w := restoreWriter{st: st}
	for _, p := range []int32{0, 1, 2, 3} {
		if err := w.add(p, []byte("c/h"), []byte{byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	has := func(st *stateStore) (parts []int32) {
		for _, p := range []int32{0, 1, 2, 3} {
			var n int
			if err := st.loadConv(p, "c", func(string, []byte) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				parts = append(parts, p)
			}
		}
		return parts
	}
	cp := &checkpoint{TopicID: "log", Partitions: 4, Parts: map[int32]checkpointPartition{0: {From: 4, Since: 1}, 1: {From: 10, Since: 2}, 3: {From: 7, Since: 3}}}
	if err := errors.Join(st.saveCheckpoint(cp), st.Close()); err != nil {
		t.Fatal(err)
	}

	for range 2 { // the second time after a close that took nothing
		st = openTestStore(t, dir)
		if got := has(st); !slices.Equal(got, []int32{0, 1, 3}) {
			t.Errorf("after a checkpoint of 0, 1 and 3, the store holds partitions %v", got)
		}
		if st.resumed == nil || !reflect.DeepEqual(*st.resumed, *cp) {
			t.Errorf("resumed %+v, want %+v", st.resumed, cp)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}

	st = openTestStore(t, dir)
	st.resumed = nil // taken by a run, which changes the store and crashes
	if err := errors.Join(st.clear(1), st.Close()); err != nil {
		t.Fatal(err)
	}
	st = openTestStore(t, dir)
	defer st.Close()
	if got := has(st); len(got) != 0 || st.resumed != nil {
		t.Errorf("opened without a checkpoint: partitions %v kept, resumed %+v", got, st.resumed)
	}
}

// TestResumeChecksTheChangelog: a sequencer takes the checkpoint its state
// store was opened with only for the same changelog topic (id and
// partition count); its partitions are then restored from the
// checkpoint's offsets. Another topic's checkpoint is dropped and its
// partitions' ranges emptied.
func TestResumeChecksTheChangelog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		id     string
		nparts int32
		keep   bool
	}{
		{"same", "log", 4, true},
		{"recreated", "another", 4, false},
		{"repartitioned", "log", 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st := openTestStore(t, dir)
			w := restoreWriter{st: st}
			cp := &checkpoint{TopicID: "log", Partitions: 4, Parts: map[int32]checkpointPartition{1: {From: 10, Since: 5000}}}
			if err := errors.Join(w.add(1, []byte("c/h"), []byte("x")), w.finish(), st.saveCheckpoint(cp), st.Close()); err != nil {
				t.Fatal(err)
			}
			s, err := New(Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}, NodeID: "seq-1", StateDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.logID, s.nparts = tc.id, tc.nparts
			s.resume()
			var stored int
			if err := s.store.loadConv(1, "c", func(string, []byte) error { stored++; return nil }); err != nil {
				t.Fatal(err)
			}
			ss := s.synced[1]
			if !tc.keep {
				if ss != nil || stored != 0 {
					t.Fatalf("another changelog's checkpoint: synced %+v, %d keys kept", ss, stored)
				}
				return
			}
			if ss == nil || ss.from != 10 || !ss.lagSince.Equal(time.UnixMilli(5000)) || stored != 1 {
				t.Fatalf("the same changelog's checkpoint: synced %+v, %d keys kept", ss, stored)
			}
			if ss.usable(time.UnixMilli(5000).Add(maxRestoreLag), maxRestoreLag) {
				t.Fatal("a checkpoint older than the restore lag is usable")
			}
		})
	}
}

// TestCheckpointSince: a partition's checkpoint says its records after the
// offset can be as old as the earliest of the last time the sequencer knew
// itself in its group, the partition's revocation and the oldest record
// the store lacks; a partition whose records may be older than a restore
// may read is left out.
func TestCheckpointSince(t *testing.T) {
	s, err := New(Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}, NodeID: "seq-1", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	s.logID, s.nparts, s.confirmed = "log", 4, ago(10*time.Minute)
	s.synced = map[int32]*syncState{
		0: {from: 5, end: 5},
		1: {from: 5, end: 9, lagSince: ago(20 * time.Minute)},
		2: {from: 3, end: 3},
		3: {from: 2, end: 8, lagSince: ago(2 * time.Hour)},
	}
	s.revokedAt[2] = ago(30 * time.Minute)
	s.saveCheckpoint()
	cp, err := s.store.readCheckpoint()
	if err != nil || cp == nil {
		t.Fatalf("no checkpoint: %v", err)
	}
	want := map[int32]checkpointPartition{
		0: {From: 5, Since: ago(10 * time.Minute).UnixMilli()},
		1: {From: 5, Since: ago(20 * time.Minute).UnixMilli()},
		2: {From: 3, Since: ago(30 * time.Minute).UnixMilli()},
	}
	if cp.TopicID != "log" || cp.Partitions != 4 || !maps.Equal(cp.Parts, want) {
		t.Fatalf("checkpoint %+v, want parts %v", cp, want)
	}
	if len(s.synced) != 0 || len(s.revokedAt) != 0 {
		t.Fatalf("state left after the checkpoint: synced %v, revoked %v", s.synced, s.revokedAt)
	}
}

// TestOlderClaimDropsCheckpoint: a version of the store that knows nothing
// of checkpoints empties every partition's range when it opens the store,
// and the checkpoint with them, so that a later version does not trust a
// range the older one changed.
func TestOlderClaimDropsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, dir)
	cp := &checkpoint{TopicID: "log", Partitions: 4, Parts: map[int32]checkpointPartition{1: {From: 10, Since: 2}}}
	if err := errors.Join(st.saveCheckpoint(cp), st.Close()); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(dir, &pebble.Options{DisableWAL: true, Logger: pebbleLogger{slog.Default()}})
	if err != nil {
		t.Fatal(err)
	}
	// What the older version's claim does: empty every partition's range.
	if err := errors.Join(db.DeleteRange(partitionKey(0, ""), []byte{0x80}, pebble.NoSync), db.Flush(), db.Close()); err != nil {
		t.Fatal(err)
	}
	st = openTestStore(t, dir)
	defer st.Close()
	if st.resumed != nil {
		t.Fatalf("the checkpoint outlived an older version's open: %+v", st.resumed)
	}
}

// openTestStore opens the state store in dir, failing the test if it
// cannot.
func openTestStore(t testing.TB, dir string) *stateStore {
	t.Helper()
	st, err := openStateStore(dir, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
