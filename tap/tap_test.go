package tap_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/tap"
)

const partitions = 4

// logEnv is an embedded broker on loopback with Parley's topics, and a
// transactional producer that writes events as the sequencer does: keyed
// by conversation, partitioned by murmur2, in committed transactions.
type logEnv struct {
	t   *testing.T
	kc  kafka.Config
	txn *kgo.Client
}

func newLogEnv(t *testing.T) *logEnv {
	t.Helper()
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kc := kafka.Config{Brokers: []string{b.Addr()}, Partitions: partitions, Logger: quietLogger()}.WithDefaults()
	e := &logEnv{t: t, kc: kc, txn: newClient(t, kc, kgo.TransactionalID("tap-test-"+ksuid.New().String()))}
	if err := kafka.EnsureTopics(context.Background(), e.txn, kc); err != nil {
		t.Fatal(err)
	}
	return e
}

func newClient(t *testing.T, kc kafka.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kc.ClientOpts(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// write writes evs in one transaction with record timestamp ts, and
// commits it, or aborts it if commit is false.
func (e *logEnv) write(ts time.Time, commit bool, evs ...*parleyv1.Event) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.txn.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range evs {
		ev.Ts = ts.UnixMilli()
		if err := schema.CheckEvent(ev); err != nil {
			e.t.Fatalf("test event %v: %v", ev, err)
		}
		v, err := proto.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		r := &kgo.Record{Topic: e.kc.Topics().Events, Key: []byte(ev.Conv), Value: v, Timestamp: ts}
		if err := e.txn.ProduceSync(ctx, r).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		e.t.Fatal(err)
	}
}

// logged is an event as the log holds it.
type logged struct {
	partition int32
	offset    int64
	ts        time.Time
	ev        *parleyv1.Event
}

// committed reads every committed event record with a plain consumer.
func (e *logEnv) committed() []logged {
	e.t.Helper()
	var out []logged
	err := kafka.ReadToEnd(context.Background(), e.kc.ClientOpts(), e.kc.Topics().Events, nil, func(r *kgo.Record) error {
		ev := new(parleyv1.Event)
		if err := proto.Unmarshal(r.Value, ev); err != nil {
			return err
		}
		out = append(out, logged{r.Partition, r.Offset, r.Timestamp, ev})
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func msgID() string { return ksuid.New().String() }

func created(conv, owner string, members ...string) *parleyv1.Event {
	return &parleyv1.Event{Conv: conv, Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_CREATED, MsgId: msgID(), From: owner,
		ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: append([]string{owner}, members...), Title: "t-" + conv[:4]}
}

func message(conv string, seq int64, from, text string) *parleyv1.Event {
	return &parleyv1.Event{Conv: conv, Seq: seq, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: msgID(), From: from,
		Cmid: fmt.Sprintf("c%d", seq), Kind: "text", Body: []byte(fmt.Sprintf(`{"text":%q}`, text))}
}

func withTarget(typ parleyv1.EventType, conv string, seq int64, from string, target int64) *parleyv1.Event {
	ev := &parleyv1.Event{Conv: conv, Seq: seq, Type: typ, MsgId: msgID(), From: from, Target: target}
	if typ == parleyv1.EventType_EVENT_TYPE_EDIT {
		ev.Body = []byte(`{"text":"edited"}`)
	}
	return ev
}

// convsByPartition returns three conversation ids: a and b on one
// partition, c on another.
func convsByPartition(t *testing.T) (a, b, c string) {
	t.Helper()
	a = ksuid.New().String()
	pa := kafka.KeyPartition([]byte(a), partitions)
	for b == "" || c == "" {
		id := ksuid.New().String()
		switch p := kafka.KeyPartition([]byte(id), partitions); {
		case p == pa && b == "":
			b = id
		case p != pa && c == "":
			c = id
		}
	}
	return a, b, c
}

// fixture is a log of three conversations written an hour and more ago
// ("old") and just now ("new"), with an aborted transaction and an event
// of conversation a misplaced on another partition than a's.
type fixture struct {
	*logEnv
	a, b, c  string
	pa, pc   int32
	newSince time.Time // between the old and the new events
	log      []logged  // the committed events
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{logEnv: newLogEnv(t)}
	f.a, f.b, f.c = convsByPartition(t)
	f.pa = kafka.KeyPartition([]byte(f.a), partitions)
	f.pc = kafka.KeyPartition([]byte(f.c), partitions)
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	f.newSince = now.Add(-time.Hour)

	for _, conv := range []string{f.a, f.b, f.c} {
		f.write(old, true, created(conv, "alice", "bob"), message(conv, 2, "alice", "old "+conv))
	}
	f.write(old.Add(time.Minute), false, message(f.a, 3, "alice", "aborted"))
	f.write(now, true,
		message(f.a, 3, "bob", "new a"),
		withTarget(parleyv1.EventType_EVENT_TYPE_READ, f.a, 4, "alice", 3),
		withTarget(parleyv1.EventType_EVENT_TYPE_EDIT, f.a, 5, "alice", 2),
	)
	f.write(now, true, &parleyv1.Event{Conv: f.b, Seq: 3, Type: parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, MsgId: msgID(), From: "alice", Members: []string{"carol"}})
	f.write(now, true, message(f.c, 3, "bob", "new c"), withTarget(parleyv1.EventType_EVENT_TYPE_REVOKE, f.c, 4, "bob", 3))

	// An event of a on a partition that is not a's: only a reader of
	// every partition sees it.
	plain := newClient(t, f.kc, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	misplaced := message(f.a, 100, "alice", "misplaced")
	misplaced.Ts = now.UnixMilli()
	v, _ := proto.Marshal(misplaced)
	if err := plain.ProduceSync(context.Background(), &kgo.Record{Topic: f.kc.Topics().Events, Partition: f.pc, Key: []byte(f.a), Value: v, Timestamp: now}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	f.log = f.committed()
	if len(f.log) != 13 {
		t.Fatalf("the log holds %d committed events, want 13", len(f.log))
	}
	return f
}

// want returns the committed events that keep selects, as lines sorted
// like got's.
func (f *fixture) want(keep func(l logged) bool) []string {
	var out []string
	for _, l := range f.log {
		if keep(l) {
			out = append(out, line(schema.ToJSON(l.ev)))
		}
	}
	sort.Strings(out)
	return out
}

func line(j schema.EventJSON) string {
	b, err := json.Marshal(j)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// run runs the tap to the end and returns its lines, sorted (partitions
// interleave in any order), after checking that each conversation's
// events of one partition came in seq order.
func (f *fixture) run(cfg tap.Config) []string {
	f.t.Helper()
	cfg.Kafka, cfg.Logger = f.kc, quietLogger()
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := tap.Run(ctx, cfg, &buf); err != nil {
		f.t.Fatalf("tap.Run(%+v): %v", cfg, err)
	}
	lines := parseLines(f.t, buf.Bytes())
	lastSeq := make(map[string]int64)
	for _, j := range lines {
		if j.Seq == 100 {
			continue // the misplaced event
		}
		if j.Seq <= lastSeq[j.Conv] {
			f.t.Errorf("%s: seq %d printed after seq %d", j.Conv, j.Seq, lastSeq[j.Conv])
		}
		lastSeq[j.Conv] = j.Seq
	}
	out := make([]string, len(lines))
	for i, j := range lines {
		out[i] = line(j)
	}
	sort.Strings(out)
	return out
}

func parseLines(t *testing.T, b []byte) []schema.EventJSON {
	t.Helper()
	var out []schema.EventJSON
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var j schema.EventJSON
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatalf("tap line %q: %v", sc.Text(), err)
		}
		out = append(out, j)
	}
	return out
}

func check(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: tap printed %d events, want %d\ngot:\n  %s\nwant:\n  %s", what, len(got), len(want),
			strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestFilters writes events as the sequencer does and checks what each
// filter of the tap prints, against what a plain consumer reads from the
// log: each must keep exactly the events it selects.
func TestFilters(t *testing.T) {
	f := newFixture(t)
	all := func(logged) bool { return true }
	isType := func(ts ...parleyv1.EventType) func(logged) bool {
		return func(l logged) bool { return slices.Contains(ts, l.ev.Type) }
	}
	isNew := func(l logged) bool { return !l.ts.Before(f.newSince) }

	got := f.run(tap.Config{})
	check(t, "no filter", got, f.want(all))
	for _, l := range got {
		if strings.Contains(l, "aborted") {
			t.Errorf("an aborted event was printed: %s", l)
		}
	}

	t.Run("conv", func(t *testing.T) {
		// a's partition only: b's events there and a's misplaced one on
		// c's partition are left out.
		check(t, "--conv a", f.run(tap.Config{Convs: []string{f.a}}), f.want(func(l logged) bool {
			return l.ev.Conv == f.a && l.partition == f.pa
		}))
		// Both partitions are read, so a's misplaced event on c's is
		// printed too.
		check(t, "--conv a,c", f.run(tap.Config{Convs: []string{f.a, f.c}}), f.want(func(l logged) bool {
			return l.ev.Conv == f.a || l.ev.Conv == f.c
		}))
		check(t, "--conv unknown", f.run(tap.Config{Convs: []string{"no-such-conv"}}), nil)
	})

	t.Run("type", func(t *testing.T) {
		check(t, "--type message", f.run(tap.Config{Types: []parleyv1.EventType{parleyv1.EventType_EVENT_TYPE_MESSAGE}}),
			f.want(isType(parleyv1.EventType_EVENT_TYPE_MESSAGE)))
		types := []parleyv1.EventType{parleyv1.EventType_EVENT_TYPE_CREATED, parleyv1.EventType_EVENT_TYPE_READ, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED}
		check(t, "--type created,read,member_added", f.run(tap.Config{Types: types}), f.want(isType(types...)))
		check(t, "--type member_removed", f.run(tap.Config{Types: []parleyv1.EventType{parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED}}), nil)
	})

	t.Run("from-offset", func(t *testing.T) {
		check(t, "--from-offset 3", f.run(tap.Config{Offsets: tap.Offsets{tap.AllPartitions: 3}}),
			f.want(func(l logged) bool { return l.offset >= 3 }))
		check(t, "--from-offset 4,PC:0", f.run(tap.Config{Offsets: tap.Offsets{tap.AllPartitions: 4, f.pc: 0}}),
			f.want(func(l logged) bool { return l.offset >= 4 || l.partition == f.pc }))
		check(t, "--from-offset PA:2", f.run(tap.Config{Offsets: tap.Offsets{f.pa: 2}}),
			f.want(func(l logged) bool { return l.offset >= 2 || l.partition != f.pa }))
		check(t, "--from-offset 1000", f.run(tap.Config{Offsets: tap.Offsets{tap.AllPartitions: 1000}}), nil)
		check(t, "--conv c --from-offset PC:3", f.run(tap.Config{Convs: []string{f.c}, Offsets: tap.Offsets{f.pc: 3}}),
			f.want(func(l logged) bool { return l.ev.Conv == f.c && l.offset >= 3 }))
	})

	t.Run("since", func(t *testing.T) {
		// The old events were written with backdated timestamps, so the
		// markers of their transactions, stamped by the broker, are newer
		// than they: the lookup lands on the first marker of a's
		// partition, and b's old events after it must still be left out.
		check(t, "--since (an hour ago)", f.run(tap.Config{Since: f.newSince}), f.want(isNew))
		since, err := tap.ParseSince("1h", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		check(t, "--since 1h", f.run(tap.Config{Since: since}), f.want(isNew))
		check(t, "--since (3 hours ago)", f.run(tap.Config{Since: time.Now().Add(-3 * time.Hour)}), f.want(all))
		check(t, "--since (in an hour)", f.run(tap.Config{Since: time.Now().Add(time.Hour)}), nil)
	})

	t.Run("together", func(t *testing.T) {
		cfg := tap.Config{Convs: []string{f.a, f.c}, Types: []parleyv1.EventType{parleyv1.EventType_EVENT_TYPE_MESSAGE}, Since: f.newSince}
		check(t, "--conv a,c --type message --since", f.run(cfg), f.want(func(l logged) bool {
			return l.ev.Type == parleyv1.EventType_EVENT_TYPE_MESSAGE && isNew(l) && (l.ev.Conv == f.a || l.ev.Conv == f.c)
		}))
	})

	t.Run("bad partition", func(t *testing.T) {
		err := tap.Run(context.Background(), tap.Config{Kafka: f.kc, Logger: quietLogger(), Offsets: tap.Offsets{partitions: 0}}, io.Discard)
		if !errors.Is(err, tap.ErrBadConfig) || !strings.Contains(err.Error(), fmt.Sprintf("partition %d, but", partitions)) {
			t.Fatalf("offset for partition %d of %d: %v", partitions, partitions, err)
		}
	})
}

// TestFollowFiltered follows conversation a from an hour ago: it prints
// a's recent events, then a's new one, and never b's, written just before
// it on the same partition.
func TestFollowFiltered(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := new(testutil.SyncBuffer)
	done := make(chan error, 1)
	go func() {
		done <- tap.Run(ctx, tap.Config{Kafka: f.kc, Logger: quietLogger(), Follow: true, Convs: []string{f.a}, Since: f.newSince}, out)
	}()
	seqs := func() []int64 {
		var s []int64
		for _, j := range parseLines(t, []byte(out.String())) {
			if j.Conv != f.a {
				t.Fatalf("following a, the tap printed an event of %s", j.Conv)
			}
			s = append(s, j.Seq)
		}
		return s
	}
	testutil.WaitFor(t, 30*time.Second, "a's recent events", func() bool { return len(seqs()) >= 3 })
	f.write(time.Now(), true, message(f.b, 4, "alice", "b, not followed"), message(f.a, 6, "alice", "followed"))
	testutil.WaitFor(t, 30*time.Second, "a's new event", func() bool { return len(seqs()) >= 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tap.Run returned %v when its context ended", err)
	}
	if got := seqs(); !slices.Equal(got, []int64{3, 4, 5, 6}) {
		t.Fatalf("following a printed seqs %v, want [3 4 5 6]", got)
	}
}

// TestBadConfig: a configuration that cannot work is refused before the
// tap dials anything.
func TestBadConfig(t *testing.T) {
	kc := kafka.Config{Brokers: []string{"127.0.0.1:1"}}
	for name, cfg := range map[string]tap.Config{
		"bad conv":         {Convs: []string{"no spaces"}},
		"unknown type":     {Types: []parleyv1.EventType{99}},
		"negative offset":  {Offsets: tap.Offsets{0: -1}},
		"offset and since": {Offsets: tap.Offsets{0: 1}, Since: time.Now()},
	} {
		cfg.Kafka = kc
		if err := tap.Run(context.Background(), cfg, io.Discard); !errors.Is(err, tap.ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", name, err)
		}
	}
}

func TestParseTypes(t *testing.T) {
	got, err := tap.ParseTypes("message, EDIT", "read")
	want := []parleyv1.EventType{parleyv1.EventType_EVENT_TYPE_MESSAGE, parleyv1.EventType_EVENT_TYPE_EDIT, parleyv1.EventType_EVENT_TYPE_READ}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ParseTypes: %v, %v", got, err)
	}
	names := tap.TypeNames()
	if !slices.Equal(names, []string{"message", "edit", "revoke", "created", "member_added", "member_removed", "read"}) {
		t.Errorf("TypeNames() = %v", names)
	}
	_, err = tap.ParseTypes("message,messages")
	if err == nil || !strings.Contains(err.Error(), `"messages"`) || !strings.Contains(err.Error(), strings.Join(names, ", ")) {
		t.Fatalf("an unknown type gave %v, want an error naming it and listing the types", err)
	}
}

func TestParseConvs(t *testing.T) {
	if got, err := tap.ParseConvs("a1,b2", " c3 "); err != nil || !slices.Equal(got, []string{"a1", "b2", "c3"}) {
		t.Fatalf("ParseConvs: %v, %v", got, err)
	}
	if _, err := tap.ParseConvs("ok", "not/ok"); err == nil || !strings.Contains(err.Error(), `"not/ok"`) {
		t.Fatalf("a bad id gave %v", err)
	}
}

func TestParseOffsets(t *testing.T) {
	for in, want := range map[string]tap.Offsets{
		"":                      nil,
		"5":                     {tap.AllPartitions: 5},
		"0:10,3:0":              {0: 10, 3: 0},
		"100, 2:7":              {tap.AllPartitions: 100, 2: 7},
		"2:7,100":               {tap.AllPartitions: 100, 2: 7},
		"1:9223372036854775807": {1: 1<<63 - 1},
	} {
		got, err := tap.ParseOffsets(in)
		if err != nil || len(got) != len(want) || (want == nil) != (got == nil) {
			t.Errorf("ParseOffsets(%q) = %v, %v; want %v", in, got, err, want)
			continue
		}
		for p, o := range want {
			if got[p] != o {
				t.Errorf("ParseOffsets(%q) = %v; want %v", in, got, want)
			}
		}
	}
	if got, err := tap.ParseOffsets("1:5", "7"); err != nil || got[1] != 5 || got[tap.AllPartitions] != 7 {
		t.Errorf("two values: %v, %v", got, err)
	}
	for _, in := range []string{"x", "-1", "1:-2", "-1:5", "a:5", "1:", ":5", "1:2:3", "5,6", "1:5,1:6", "1.5"} {
		if got, err := tap.ParseOffsets(in); err == nil {
			t.Errorf("ParseOffsets(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-21T09:30:00Z":      time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC),
		"2026-11-21T10:30:00+01:00": time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC),
		"2026-11-21T09:30:00.250Z":  time.Date(2026, 11, 21, 9, 30, 0, 250e6, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"2h30m":                     now.Add(-150 * time.Minute),
		"0s":                        now,
	} {
		got, err := tap.ParseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-1h", "2026-11-21", "2026-11-21 09:30:00", "10"} {
		if got, err := tap.ParseSince(in, now); err == nil {
			t.Errorf("ParseSince(%q) = %v, want an error", in, got)
		}
	}
}
