package sequencer

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// processOnly returns a Sequencer that is never run, for calling process
// directly: it knows the default partition counts and has no state.
func processOnly(t *testing.T) *Sequencer {
	t.Helper()
	s, err := New(Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}, NodeID: "seq-test",
		Now: func() time.Time { return time.UnixMilli(1_760_000_000_000) }})
	if err != nil {
		t.Fatal(err)
	}
	s.nparts, s.nout = s.cfg.Kafka.Partitions, s.cfg.Kafka.OutcomesPartitions
	return s
}

// TestProcessFlushesOncePerTransaction: a transaction whose commands for
// one partition come in several fetches (as gather leaves them) writes each
// conversation's head once, after the last of them, and a chunk sealed
// within it once.
func TestProcessFlushesOncePerTransaction(t *testing.T) {
	s := processOnly(t)
	conv := ksuid.New().String()
	for kafka.KeyPartition([]byte(conv), s.nparts) != 0 {
		conv = ksuid.New().String()
	}
	s.parts[0] = newPartition(s.rules)
	topic := s.cfg.Kafka.Topics().Commands
	var offset int64
	record := func(cmid string, body proto.Message) *kgo.Record {
		cmd := &parleyv1.Command{Conv: conv, From: "alice", MsgId: ksuid.New().String(), Cmid: cmid}
		switch b := body.(type) {
		case *parleyv1.Create:
			cmd.Body = &parleyv1.Command_Create{Create: b}
		case *parleyv1.Send:
			cmd.Body = &parleyv1.Command_Send{Send: b}
		}
		v, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		offset++
		return &kgo.Record{Topic: topic, Partition: 0, Offset: offset, Key: []byte(conv), Value: v}
	}
	fetch := func(recs ...*kgo.Record) kgo.Fetch {
		return kgo.Fetch{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{{Partition: 0, Records: recs}}}}}
	}
	// Three fetches: the create and 2×chunkSize sends, so that chunks are
	// sealed in the middle fetch.
	var fetches kgo.Fetches
	fetches = append(fetches, fetch(record("create", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}})))
	for f := range 2 {
		var recs []*kgo.Record
		for i := range chunkSize {
			recs = append(recs, record(fmt.Sprintf("m%d-%d", f, i), &parleyv1.Send{Kind: "text", Body: []byte(`"hi"`)}))
		}
		fetches = append(fetches, fetch(recs...))
	}

	changelog := map[string]int{}
	events := 0
	if err := s.process(fetches, func(r *kgo.Record) {
		switch r.Topic {
		case s.cfg.Kafka.Topics().SequencerState:
			changelog[string(r.Key)]++
		case s.cfg.Kafka.Topics().Events:
			events++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if events != 1+2*chunkSize {
		t.Fatalf("%d events, want %d", events, 1+2*chunkSize)
	}
	var chunks int
	for k, n := range changelog {
		if n != 1 {
			t.Errorf("%s written %d times in one transaction", k, n)
		}
		if strings.Contains(k, "/k/") {
			chunks++
		}
	}
	// The create's entry and 2×chunkSize sends: two full chunks.
	if changelog[headKey(conv)] != 1 || chunks != 2 {
		t.Fatalf("changelog %v: want the head once and two chunks", changelog)
	}
}

// TestProcessPartitions: a large transaction over several partitions, each
// in several fetches, decides them on several goroutines; every command gets
// one outcome, in a batch for the connector partition it names, each
// conversation's events are produced in seq order with their bodies intact
// (encoded into several value slabs), and each partition's changelog goes
// to its own changelog partition.
func TestProcessPartitions(t *testing.T) {
	s := processOnly(t)
	topics := s.cfg.Kafka.Topics()
	const parts, convsPerPart, sends = 4, 3, 6 * chunkSize
	convPart := map[string]int32{}
	var convs []string
	for p := range int32(parts) {
		s.parts[p] = newPartition(s.rules)
		for range convsPerPart {
			conv := ksuid.New().String()
			for kafka.KeyPartition([]byte(conv), s.nparts) != p {
				conv = ksuid.New().String()
			}
			convPart[conv] = p
			convs = append(convs, conv)
		}
	}
	offsets := map[int32]int64{}
	wantReply := map[string]*parleyv1.ReplyTo{} // msg_id -> where its outcome goes
	// record gives cmd its sender and ids, and a reply partition picked by n.
	record := func(cmd *parleyv1.Command, n int) *kgo.Record {
		conv := cmd.Conv
		cmd.From, cmd.MsgId = "alice", ksuid.New().String()
		cmd.ReplyTo = &parleyv1.ReplyTo{Node: fmt.Sprintf("connector-%d", n%2), Partition: int32(n % 3)}
		wantReply[cmd.MsgId] = cmd.ReplyTo
		v, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		p := convPart[conv]
		offsets[p]++
		return &kgo.Record{Topic: topics.Commands, Partition: p, Offset: offsets[p], Key: []byte(conv), Value: v}
	}
	// Each fetch holds every partition; each conversation is created in the
	// first and sent to in every one. The bodies are large enough that a
	// partition's events take several value slabs.
	body := []byte(`"` + strings.Repeat("x", 2000) + `"`)
	var fetches kgo.Fetches
	for f := range 3 {
		var fetch kgo.Fetch
		fetch.Topics = []kgo.FetchTopic{{Topic: topics.Commands}}
		for p := range int32(parts) {
			fp := kgo.FetchPartition{Partition: p}
			for i, conv := range convs {
				if convPart[conv] != p {
					continue
				}
				if f == 0 {
					fp.Records = append(fp.Records, record(&parleyv1.Command{Conv: conv, Cmid: "create",
						Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}}}, i))
				}
				for j := range sends / 3 {
					fp.Records = append(fp.Records, record(&parleyv1.Command{Conv: conv, Cmid: fmt.Sprintf("m%d-%d", f, j),
						Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: body}}}, i+j))
				}
			}
			fetch.Topics[0].Partitions = append(fetch.Topics[0].Partitions, fp)
		}
		fetches = append(fetches, fetch)
	}

	if n := fetches.NumRecords(); n < parallelMin {
		t.Fatalf("%d commands: too few to be decided in parallel", n)
	}
	var mu sync.Mutex
	var produced []*kgo.Record
	if err := s.process(fetches, func(r *kgo.Record) {
		mu.Lock()
		produced = append(produced, r)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	lastSeq := map[string]int64{}
	heads := map[string]int{}
	outcomes := map[string]int{}
	for _, r := range produced {
		switch r.Topic {
		case topics.Events:
			ev := new(parleyv1.Event)
			if err := proto.Unmarshal(r.Value, ev); err != nil {
				t.Fatal(err)
			}
			if ev.Seq != lastSeq[ev.Conv]+1 {
				t.Fatalf("conversation %s: event %d produced after %d", ev.Conv, ev.Seq, lastSeq[ev.Conv])
			}
			lastSeq[ev.Conv] = ev.Seq
			if ev.Type == parleyv1.EventType_EVENT_TYPE_MESSAGE && !bytes.Equal(ev.Body, body) {
				t.Fatalf("conversation %s: event %d has a body of %d bytes, not the one sent", ev.Conv, ev.Seq, len(ev.Body))
			}
		case topics.SequencerState:
			key := string(r.Key)
			conv, _, _ := strings.Cut(key, "/")
			if r.Partition != convPart[conv] {
				t.Errorf("changelog record %s on partition %d, want %d", key, r.Partition, convPart[conv])
			}
			if key == headKey(conv) {
				heads[conv]++
			}
		case topics.Outcomes:
			var batch parleyv1.OutcomeBatch
			if err := proto.Unmarshal(r.Value, &batch); err != nil {
				t.Fatal(err)
			}
			if string(r.Key) != batch.Node {
				t.Errorf("outcome batch for %s keyed %q", batch.Node, r.Key)
			}
			for _, o := range batch.Outcomes {
				outcomes[o.MsgId]++
				if want := wantReply[o.MsgId]; want.GetNode() != batch.Node || want.GetPartition() != r.Partition {
					t.Errorf("outcome of %s sent to %s/%d, want %v", o.MsgId, batch.Node, r.Partition, want)
				}
				if o.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
					t.Errorf("outcome of %s: %v %v %q", o.MsgId, o.Status, o.Reason, o.Message)
				}
			}
		default:
			t.Fatalf("record produced to %s", r.Topic)
		}
	}
	for _, conv := range convs {
		if lastSeq[conv] != 1+sends || heads[conv] != 1 {
			t.Errorf("conversation %s: last seq %d (want %d), head written %d times (want once)", conv, lastSeq[conv], 1+sends, heads[conv])
		}
	}
	for id := range wantReply {
		if outcomes[id] != 1 {
			t.Errorf("command %s got %d outcomes, want 1", id, outcomes[id])
		}
	}
	cmds := int64(len(convs) * (1 + sends))
	if st := s.Stats(); st.Commands != cmds || st.Events != cmds || st.Rejected != 0 {
		t.Errorf("stats %+v, want %d commands and events", st, cmds)
	}
}

// TestStateSharesNoRecordMemory: commands are decoded sharing their
// records' memory, but the state keeps none of it. Two sequencers decide
// the same commands, each from its own copy of the records; then one
// copy's records are overwritten. The two states stay the same, everything
// in them included (map keys, heads, members, window entries), and so do
// the outcomes of later commands that look the state up: retries found by
// cmid, edits and revokes of earlier messages, reads.
func TestStateSharesNoRecordMemory(t *testing.T) {
	group := ksuid.New().String()
	direct := schema.DirectConvID("alice", "bob")
	var cmds []*parleyv1.Command
	add := func(conv, from, cmid string, body proto.Message) {
		cmd, err := schema.SetBody(&parleyv1.Command{Conv: conv, From: from, MsgId: ksuid.New().String(), Cmid: cmid,
			ReplyTo: &parleyv1.ReplyTo{Node: "connector-1", Partition: 1}}, body)
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	add(group, "alice", "c1", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "plans", Members: []string{"bob", "carol"}})
	add(direct, "alice", "c2", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_DIRECT, Members: []string{"bob"}})
	add(group, "alice", "a1", &parleyv1.AddMembers{Users: []string{"dave", "erin"}})
	for i := range 3 * chunkSize {
		for _, conv := range []string{group, direct} {
			add(conv, []string{"alice", "bob"}[i%2], fmt.Sprintf("m%d", i), &parleyv1.Send{Kind: "text", Body: []byte(`{"text":"hello"}`)})
		}
	}
	add(group, "carol", "r1", &parleyv1.RemoveMembers{Users: []string{"erin"}})  // refused: not the owner
	add(group, "alice", "r2", &parleyv1.RemoveMembers{Users: []string{"alice"}}) // the owner leaves: bob owns it
	add(group, "bob", "r3", &parleyv1.RemoveMembers{Users: []string{"dave"}})
	add(group, "carol", "read", &parleyv1.Read{Seq: 5})
	first := len(cmds)
	// Then, decided after the overwrite: commands that find earlier ones
	// by cmid or seq.
	add(group, "alice", "m0", &parleyv1.Send{Kind: "text", Body: []byte(`"again"`)})
	add(direct, "bob", "m1", &parleyv1.Send{Kind: "text", Body: []byte(`"again"`)})
	add(group, "bob", "e1", &parleyv1.Edit{Target: 4, Body: []byte(`"edited"`)}) // bob's first message
	add(direct, "alice", "v1", &parleyv1.Revoke{Target: 2})                      // alice's first message
	add(group, "carol", "read2", &parleyv1.Read{Seq: 7})
	add(group, "alice", "c1", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "plans", Members: []string{"bob", "carol"}})
	add(group, "bob", "c1", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: "plans", Members: []string{"bob", "carol"}})

	type run struct {
		s       *Sequencer
		records []*kgo.Record
		out     []string // what was produced, in a comparable form
	}
	runs := make([]*run, 2)
	for i := range runs {
		s := processOnly(t)
		for p := range s.nparts {
			s.parts[p] = newPartition(s.rules)
		}
		r := &run{s: s}
		for j, cmd := range cmds {
			v, err := proto.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			r.records = append(r.records, &kgo.Record{Topic: s.cfg.Kafka.Topics().Commands, Partition: kafka.KeyPartition([]byte(cmd.Conv), s.nparts),
				Offset: int64(j), Key: []byte(cmd.Conv), Value: v})
		}
		runs[i] = r
	}
	decide := func(r *run, recs []*kgo.Record) {
		fetch := kgo.Fetch{Topics: []kgo.FetchTopic{{Topic: r.s.cfg.Kafka.Topics().Commands}}}
		for _, rec := range recs {
			ps := fetch.Topics[0].Partitions
			i := slices.IndexFunc(ps, func(fp kgo.FetchPartition) bool { return fp.Partition == rec.Partition })
			if i < 0 {
				i = len(ps)
				fetch.Topics[0].Partitions = append(ps, kgo.FetchPartition{Partition: rec.Partition})
			}
			fetch.Topics[0].Partitions[i].Records = append(fetch.Topics[0].Partitions[i].Records, rec)
		}
		if err := r.s.process(kgo.Fetches{fetch}, func(rec *kgo.Record) {
			r.out = append(r.out, fmt.Sprintf("%s %q %q", rec.Topic, rec.Key, rec.Value))
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range runs {
		decide(r, r.records[:first])
	}
	for _, rec := range runs[0].records[:first] {
		for i := range rec.Value {
			rec.Value[i] = 0xff
		}
		for i := range rec.Key {
			rec.Key[i] = 0xff
		}
	}
	compare := func(when string) {
		t.Helper()
		a, b := stateDump(t, runs[0].s), stateDump(t, runs[1].s)
		if a != b {
			t.Fatalf("%s, the state of the overwritten records' sequencer:\n%s\nthe other's:\n%s", when, a, b)
		}
		if !slices.Equal(runs[0].out, runs[1].out) {
			t.Fatalf("%s, the overwritten records' sequencer produced\n%s\nthe other\n%s", when, strings.Join(runs[0].out, "\n"), strings.Join(runs[1].out, "\n"))
		}
	}
	compare("after the records were overwritten")
	for _, r := range runs {
		decide(r, r.records[first:])
	}
	compare("after the later commands")
	// Every command was decided as meant: the later ones found what they
	// looked for.
	st := runs[0].s.Stats()
	if want := (Stats{Commands: int64(len(cmds)), Events: int64(len(cmds) - 5), Duplicates: 3, Rejected: 2}); st != want {
		t.Errorf("stats %+v, want %+v: two rejections (a remove by a member, a create of an existing group by another), three duplicates (two sends, a create)", st, want)
	}
}

// stateDump renders everything the sequencer's partitions hold, in a
// stable order.
func stateDump(t *testing.T, s *Sequencer) string {
	t.Helper()
	var b strings.Builder
	// The changelog's encoding, which writes strings that are not UTF-8
	// as they are: an overwritten one shows in the dump. The messages
	// have no maps, so their encoding is stable.
	enc := func(r stateRecord) []byte { return mustEncode(t, r) }
	for _, n := range slices.Sorted(maps.Keys(s.parts)) {
		p := s.parts[n]
		for _, conv := range slices.Sorted(maps.Keys(p.convs)) {
			c := p.convs[conv]
			fmt.Fprintf(&b, "partition %d conversation %q: head %q, %d entries\n", n, conv, enc(headRecord{c.head, c.pending}), c.entries)
			for _, u := range slices.Sorted(maps.Keys(c.members)) {
				fmt.Fprintf(&b, "  member %q %q\n", u, enc(vtRecord{c.members[u]}))
			}
			for _, ch := range c.chunks {
				fmt.Fprintf(&b, "  chunk %q\n", enc(chunkRecord{ch}))
			}
			found := windowCmids(c)
			keys := slices.SortedFunc(maps.Keys(found), func(x, y cmidKey) int {
				return cmp.Or(strings.Compare(x.from, y.from), strings.Compare(x.cmid, y.cmid))
			})
			for _, k := range keys {
				fmt.Fprintf(&b, "  cmid %q %q: %d\n", k.from, k.cmid, found[k])
			}
			for _, seq := range slices.Sorted(maps.Keys(c.revoked)) {
				fmt.Fprintf(&b, "  revoked %d\n", seq)
			}
		}
	}
	return b.String()
}

// TestProduceOutcomes: outcomes go in batches of at most
// maxOutcomeBatchBytes (an outcome larger than that alone), in their
// order, each record the batch's encoding by the generated code, keyed
// and partitioned by the connector they go to.
func TestProduceOutcomes(t *testing.T) {
	k := outcomeKey{node: "node-a", partition: 3}
	var outs []*parleyv1.Outcome
	for i := range 3000 {
		outs = append(outs, &parleyv1.Outcome{MsgId: fmt.Sprintf("m%d", i), Conv: g1, Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED,
			Event: &parleyv1.Event{Conv: g1, Seq: int64(i + 1), MsgId: fmt.Sprintf("m%d", i), Cmid: strings.Repeat("c", 64), From: "alice", Ts: 1}})
	}
	big := &parleyv1.Outcome{MsgId: "big", Conv: g1, Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED,
		Message: strings.Repeat("x", maxOutcomeBatchBytes)}
	outs = append(outs[:1500:1500], append([]*parleyv1.Outcome{big}, outs[1500:]...)...)
	var recs []*kgo.Record
	if err := produceOutcomes("outcomes", map[outcomeKey][]*parleyv1.Outcome{k: outs}, func(r *kgo.Record) { recs = append(recs, r) }); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		var b parleyv1.OutcomeBatch
		if err := proto.Unmarshal(r.Value, &b); err != nil {
			t.Fatal(err)
		}
		want, err := b.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Value, want) || string(r.Key) != k.node || b.Node != k.node || r.Partition != k.partition || r.Topic != "outcomes" {
			t.Fatalf("record %q on %s/%d: not the batch's encoding for %v", r.Key, r.Topic, r.Partition, k)
		}
		if len(r.Value) > maxOutcomeBatchBytes && len(b.Outcomes) > 1 {
			t.Fatalf("a batch of %d outcomes is %d bytes", len(b.Outcomes), len(r.Value))
		}
		for _, o := range b.Outcomes {
			got = append(got, o.MsgId)
		}
	}
	if len(got) != len(outs) || len(recs) < 3 {
		t.Fatalf("%d outcomes in %d records, want %d in several", len(got), len(recs), len(outs))
	}
	for i, o := range outs {
		if got[i] != o.MsgId {
			t.Fatalf("outcome %d is %s, want %s", i, got[i], o.MsgId)
		}
	}
}

// TestSkipApplied: a partition's commands below the offset its state has
// applied up to are taken out of the fetches (kafka.SkipReplays); a
// partition with no state in memory, or none applied yet, keeps them.
func TestSkipApplied(t *testing.T) {
	s := processOnly(t)
	topic := s.cfg.Kafka.Topics().Commands
	s.parts[0] = newPartition(s.rules)
	s.parts[0].next = 100
	s.parts[1] = newPartition(s.rules) // restored, nothing applied yet
	fp := func(p int32, from, to int64) kgo.FetchPartition {
		fp := kgo.FetchPartition{Partition: p}
		for o := from; o < to; o++ {
			fp.Records = append(fp.Records, &kgo.Record{Topic: topic, Partition: p, Offset: o})
		}
		return fp
	}
	fetches := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{fp(0, 95, 103), fp(1, 0, 3), fp(2, 7, 9)}}}}}
	s.skipApplied(fetches)
	var kept []string
	fetches.EachRecord(func(r *kgo.Record) { kept = append(kept, fmt.Sprintf("%d/%d", r.Partition, r.Offset)) })
	if want := []string{"0/100", "0/101", "0/102", "1/0", "1/1", "1/2", "2/7", "2/8"}; !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	if n := s.Stats().Replayed; n != 5 {
		t.Fatalf("%d counted as replayed, want 5", n)
	}
}
