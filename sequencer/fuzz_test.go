package sequencer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Fuzz targets for the records the sequencer reads: commands (decide, the
// function the transaction loop calls on each record) and its own
// changelog (the restorer). Seeds are real encodings; more sit in
// testdata/fuzz. Run with scripts/fuzz, or
// go test -run '^$' -fuzz '^FuzzCommandRecord$' ./sequencer.

const fuzzParts = 8

// fuzzGroup and fuzzDirect are the conversations the fuzzed commands meet.
const fuzzGroup = "3MPbDgfPSpdk4yX6HH4DZAM2c1v"

var fuzzDirect = schema.DirectConvID("alice", "bob")

// fuzzLog is a short history: a group (alice owns it, bob and carol are in
// it) with messages, an edit, a revoke and a read, and a direct
// conversation; it returns the partition and the changelog records its
// transactions wrote, in order.
func fuzzLog(tb testing.TB) (*partition, []changelogRecord) {
	p := newPartition(rules{windowMinAgeMs: 1000, windowMinEntries: 4, maxMembers: 16})
	var recs []changelogRecord
	n := 0
	do := func(conv, from, cmid string, body proto.Message) {
		n++
		cmd := &parleyv1.Command{Conv: conv, From: from, Cmid: cmid, MsgId: fmt.Sprintf("2Ue%024d", n)}
		if _, err := schema.SetBody(cmd, body); err != nil {
			tb.Fatal(err)
		}
		if _, out := p.apply(cmd, int64(1_000_000+n*1000)); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
			tb.Fatalf("setup command %d: %v %q", n, out.Reason, out.Message)
		}
		recs = flushInto(tb, p, recs)
	}
	do(fuzzGroup, "alice", "c", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob", "carol"}, Title: "t"})
	for i := range 40 { // more than a chunk, so that chunks leave the window
		do(fuzzGroup, []string{"alice", "bob"}[i%2], fmt.Sprint("m", i), &parleyv1.Send{Kind: "text", Body: []byte(fmt.Sprint(i))})
	}
	do(fuzzGroup, "bob", "e", &parleyv1.Edit{Target: 41, Body: []byte(`"edited"`)})
	do(fuzzGroup, "alice", "r", &parleyv1.Revoke{Target: 40})
	do(fuzzGroup, "carol", "", &parleyv1.Read{Seq: 42})
	do(fuzzDirect, "alice", "d", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{"bob"}})
	do(fuzzDirect, "bob", "d1", &parleyv1.Send{Kind: "text", Body: []byte(`{"x":1}`)})
	return p, recs
}

type changelogRecord struct {
	key   string
	value []byte
}

func flushInto(tb testing.TB, p *partition, recs []changelogRecord) []changelogRecord {
	if err := p.flush(func(key, value []byte) { recs = append(recs, changelogRecord{string(key), value}) }); err != nil {
		tb.Fatal(err)
	}
	return recs
}

func restore(recs []changelogRecord, r rules) (*partition, error) {
	rs := newRestorer()
	for _, rec := range recs {
		if err := rs.add(rec.key, rec.value); err != nil {
			return nil, err
		}
	}
	return rs.partition(r)
}

// snapshot renders everything a partition knows, in a stable order, for
// comparing states.
func snapshot(p *partition) string {
	var b strings.Builder
	convs := make([]string, 0, len(p.convs))
	for c := range p.convs {
		convs = append(convs, c)
	}
	sort.Strings(convs)
	det := proto.MarshalOptions{Deterministic: true}
	text := func(m proto.Message) string {
		b, err := det.Marshal(m)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%x", b)
	}
	for _, conv := range convs {
		c := p.convs[conv]
		fmt.Fprintf(&b, "%s head {%s} entries %d, %d bytes of ids\n", conv, text(headProto(c)), c.entries, c.idBytes)
		users := make([]string, 0, len(c.members))
		for u := range c.members {
			users = append(users, u)
		}
		sort.Strings(users)
		for _, u := range users {
			fmt.Fprintf(&b, "  member %s {%s}\n", u, text(c.members[u]))
		}
		for _, ch := range c.chunks {
			fmt.Fprintf(&b, "  chunk {%s}\n", text(chunkProto(ch)))
		}
		found := windowCmids(c)
		keys := make([]string, 0, len(found))
		for k, seq := range found {
			keys = append(keys, fmt.Sprintf("%q/%q=%d", k.from, k.cmid, seq))
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "  cmids %v\n", keys)
		var revoked []int64
		for s := range c.revoked {
			revoked = append(revoked, s)
		}
		sort.Slice(revoked, func(i, j int) bool { return revoked[i] < revoked[j] })
		fmt.Fprintf(&b, "  revoked %v\n", revoked)
	}
	return b.String()
}

func fuzzCommand(conv, from, cmid string, body proto.Message) *parleyv1.Command {
	cmd := &parleyv1.Command{Conv: conv, From: from, Cmid: cmid, MsgId: "2UeYjoA0000000000000000000z", Ts: 1,
		ReplyTo: &parleyv1.ReplyTo{Node: "node-1", Partition: 3}}
	if _, err := schema.SetBody(cmd, body); err != nil {
		panic(err)
	}
	return cmd
}

// FuzzCommandRecord feeds records of the commands topic to decide. It
// checks that nothing panics; that a value is refused as undecodable
// exactly when it is not a Command; that every other record gets one
// outcome, small and with a client error code if it is a rejection; that
// an event comes exactly with SEQUENCED, takes the next seq and is one
// every consumer of the events topic accepts; and that the changelog the
// state writes restores the same state. A truncated copy of the value must
// not panic either.
func FuzzCommandRecord(f *testing.F) {
	seeds := []*parleyv1.Command{
		fuzzCommand(fuzzGroup, "bob", "s1", &parleyv1.Send{Kind: "text", Body: []byte(`"hi"`)}),
		fuzzCommand(fuzzGroup, "bob", "m1", &parleyv1.Send{Kind: "text", Body: []byte(`"dup"`)}),
		fuzzCommand(fuzzGroup, "alice", "e1", &parleyv1.Edit{Target: 2, Body: []byte(`{"a":[1,2]}`)}),
		fuzzCommand(fuzzGroup, "alice", "r1", &parleyv1.Revoke{Target: 3}),
		fuzzCommand(fuzzGroup, "bob", "", &parleyv1.Read{Seq: 44}),
		fuzzCommand(fuzzGroup, "alice", "", &parleyv1.AddMembers{Users: []string{"dave", "erin"}}),
		fuzzCommand(fuzzGroup, "carol", "", &parleyv1.RemoveMembers{Users: []string{"carol"}}),
		fuzzCommand(fuzzGroup, "alice", "", &parleyv1.RemoveMembers{Users: []string{"alice"}}),
		fuzzCommand(fuzzDirect, "bob", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{"alice"}}),
		fuzzCommand("3MPbDjvx7TfbHFOBPjUFJsyYs50", "zed", "g", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"a", "b"}}),
		fuzzCommand(fuzzGroup, "bob", "s2", nil),
		fuzzCommand(fuzzGroup, "bad user", "s3", &parleyv1.Send{Kind: "text", Body: []byte(`1`)}),
	}
	for _, c := range seeds {
		v, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(c.Conv), v, uint8(0))
		f.Add([]byte(c.Conv), v, uint8(1)) // on the wrong partition
		f.Add([]byte("other"), v, uint8(0))
	}
	f.Add([]byte(fuzzGroup), []byte("\xff\xff not a protobuf"), uint8(0))
	f.Add([]byte(fuzzGroup), []byte(nil), uint8(0))
	huge := strings.Repeat("x", 2_000)
	v, _ := proto.Marshal(&parleyv1.Command{Conv: huge, MsgId: huge, From: huge, Cmid: huge})
	f.Add([]byte(huge), v, uint8(1))

	base, baseLog := fuzzLog(f)
	if p, err := restore(baseLog, base.rules); err != nil || snapshot(p) != snapshot(base) {
		f.Fatalf("the setup's changelog does not restore its state (%v)", err)
	}
	f.Fuzz(func(t *testing.T, key, value []byte, misplace uint8) {
		p, err := restore(baseLog, base.rules)
		if err != nil {
			t.Fatal(err)
		}
		partition := (kafka.KeyPartition(key, fuzzParts) + int32(misplace)) % fuzzParts
		var lastBefore int64
		var conv string
		if cmd := new(parleyv1.Command); proto.Unmarshal(value, cmd) == nil {
			conv = cmd.Conv
			if c := p.convs[conv]; c != nil {
				lastBefore = c.head.LastSeq
			}
		}
		cmd, ev, out, err := decide(new(parleyv1.Command), p, key, value, partition, fuzzParts, 2_000_000)
		if err != nil {
			if !errors.Is(err, schema.ErrUndecodable) || proto.Unmarshal(value, new(parleyv1.Command)) == nil {
				t.Fatalf("decide: %v, for a value that decodes", err)
			}
			if cmd != nil || ev != nil || out != nil {
				t.Fatal("an undecodable record got an outcome or an event")
			}
			return
		}
		if out == nil || cmd == nil {
			t.Fatal("a decodable record got no outcome")
		}
		if _, err := proto.Marshal(&parleyv1.OutcomeBatch{Node: "n", Outcomes: []*parleyv1.Outcome{out}}); err != nil {
			t.Fatalf("an outcome its connector cannot read: %v", err)
		}
		if n := proto.Size(out); n > 1024 {
			t.Fatalf("outcome of %d bytes: %v", n, out)
		}
		if len(out.MsgId) > schema.MaxMsgIDLen || (out.Conv != "" && !schema.ValidConvID(out.Conv)) {
			t.Fatalf("outcome repeats invalid ids: %q %q", out.MsgId, out.Conv)
		}
		switch out.Status {
		case parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED:
			if schema.ErrorCode(out.Reason) == schema.CodeInternal || out.Message == "" {
				t.Fatalf("rejection %v %q has no client code or no message", out.Reason, out.Message)
			}
		case parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED, parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE,
			parleyv1.OutcomeStatus_OUTCOME_STATUS_UNCHANGED:
		default:
			t.Fatalf("outcome status %v", out.Status)
		}
		if (ev != nil) != (out.Status == parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED) {
			t.Fatalf("event %v with outcome %v", ev, out.Status)
		}
		if ev != nil {
			if ev.Seq != lastBefore+1 || ev.Conv != conv {
				t.Fatalf("event %s/%d after last seq %d of %s", ev.Conv, ev.Seq, lastBefore, conv)
			}
			v, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if len(v) > maxEventBytes {
				t.Fatalf("event of %d bytes", len(v))
			}
			if _, err := schema.DecodeEvent(key, v); err != nil {
				t.Fatalf("the sequencer wrote an event its consumers refuse: %v\n%v", err, ev)
			}
		}
		// The changelog of this command restores the state it left.
		log := flushInto(t, p, append([]changelogRecord(nil), baseLog...))
		p2, err := restore(log, base.rules)
		if err != nil {
			t.Fatalf("restore after the command: %v", err)
		}
		if a, b := snapshot(p), snapshot(p2); a != b {
			t.Fatalf("restored state differs:\n%s\nwant\n%s", b, a)
		}
		// Truncated input: nats-style, the same decoder on a cut record.
		if len(value) > 1 {
			p3, _ := restore(baseLog, base.rules)
			_, _, _, _ = decide(new(parleyv1.Command), p3, key, value[:len(value)/2], partition, fuzzParts, 2_000_000)
		}
	})
}

// FuzzChangelogRecord adds one record to a real changelog and restores it,
// as a sequencer does when a partition is assigned. It checks that nothing
// panics; that a restore either fails with an error or yields a state
// that is consistent with its keys (a conversation's head names it, a
// member's state names them, a chunk its number, window entries run up in
// seq), that writing that state out again restores the very same state,
// and that commands against it still work.
func FuzzChangelogRecord(f *testing.F) {
	base, baseLog := fuzzLog(f)
	for _, rec := range baseLog {
		f.Add(rec.key, rec.value)
	}
	f.Add(fuzzGroup+"/h", []byte("\x0a\x01x"))
	f.Add(fuzzGroup+"/m/bob", []byte(nil))
	f.Add(fuzzGroup+"/k/99", []byte("\x08\x63\x12\x02\x08\x05"))
	f.Add(fuzzGroup+"/k/x", []byte(nil))
	f.Add("nokind", []byte(nil))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		log := append(append([]changelogRecord(nil), baseLog...), changelogRecord{key, value})
		p, err := restore(log, base.rules)
		if err != nil {
			return // a sequencer refuses to go on from a changelog it cannot trust
		}
		for conv, c := range p.convs {
			if c.head.Conv != conv {
				t.Fatalf("state of %q restored under %q", c.head.Conv, conv)
			}
			for u, m := range c.members {
				if m.User != u {
					t.Fatalf("member %q restored as %q", m.User, u)
				}
			}
		}
		// Write everything out as changelog records and restore again.
		var all []changelogRecord
		for _, c := range p.convs {
			c.dirty = false
			p.touch(c)
			c.dirtyMembers = make(map[string]bool)
			for u := range c.members {
				c.dirtyMembers[u] = true
			}
			c.newChunks = append([]*winChunk(nil), c.chunks...)
		}
		all = flushInto(t, p, all)
		p2, err := restore(all, base.rules)
		if err != nil {
			t.Fatalf("a restored state does not restore from its own changelog: %v", err)
		}
		if a, b := snapshot(p), snapshot(p2); a != b {
			t.Fatalf("state restored twice differs:\n%s\nwant\n%s", b, a)
		}
		// Commands against the restored state: no panic, next seqs.
		for conv, c := range p2.convs {
			last := c.head.LastSeq
			for _, cmd := range []*parleyv1.Command{
				fuzzCommand(conv, c.head.Owner, "fz1", &parleyv1.Send{Kind: "text", Body: []byte(`1`)}),
				fuzzCommand(conv, c.head.Owner, "fz2", &parleyv1.Edit{Target: max(last, 1), Body: []byte(`2`)}),
				fuzzCommand(conv, c.head.Owner, "fz3", &parleyv1.Revoke{Target: max(last-1, 1)}),
				fuzzCommand(conv, c.head.Owner, "", &parleyv1.Read{Seq: max(last, 1)}),
				fuzzCommand(conv, c.head.Owner, "", &parleyv1.AddMembers{Users: []string{"newbie"}}),
				fuzzCommand(conv, c.head.Owner, "", &parleyv1.RemoveMembers{Users: []string{c.head.Owner}}),
			} {
				before := c.head.LastSeq
				ev, _ := p2.apply(cmd, 5_000_000)
				if ev != nil && ev.Seq != before+1 {
					t.Fatalf("%s: event seq %d after %d", conv, ev.Seq, before)
				}
			}
			if err := p2.flush(func(_, _ []byte) {}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
