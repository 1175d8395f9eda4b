package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// The checker's rules; a broken one is a violation.
const (
	ruleAckedOnce   = "acked message in the log exactly once, at its seq"
	ruleCMIDOnce    = "no cmid in the log twice"
	ruleSeqs        = "seqs 1..n with no gap or duplicate"
	ruleDelivered   = "each device delivers its conversations in order, once, to the end"
	ruleSameAsLog   = "what a device delivered equals the log"
	ruleStore       = "the store holds exactly the log"
	ruleMembersOnly = "no event reaches a non-member"
)

var rules = []string{ruleAckedOnce, ruleCMIDOnce, ruleSeqs, ruleDelivered, ruleSameAsLog, ruleStore, ruleMembersOnly}

// verdict collects violations per rule, keeping a few examples of each.
type verdict struct {
	counts   map[string]int
	examples map[string][]string
}

func newVerdict() *verdict {
	return &verdict{counts: map[string]int{}, examples: map[string][]string{}}
}

func (v *verdict) violate(rule, format string, args ...any) {
	v.counts[rule]++
	if len(v.examples[rule]) < 5 {
		v.examples[rule] = append(v.examples[rule], fmt.Sprintf(format, args...))
	}
}

func (v *verdict) total() int {
	n := 0
	for _, c := range v.counts {
		n += c
	}
	return n
}

// span is a stretch of membership: from the event that made the user a
// member to the one that removed them (0: still a member).
type span struct{ from, to int64 }

// logView is the events topic, read back whole.
type logView struct {
	byConv  map[string][]*parleyv1.Event // in log order
	members map[string]map[string][]span // conv → user → spans
	events  int
}

func readLog(ctx context.Context, kc kafka.Config) (*logView, error) {
	lv := &logView{byConv: map[string][]*parleyv1.Event{}, members: map[string]map[string][]span{}}
	err := kafka.ReadToEnd(ctx, kc.ClientOpts(), kc.Topics().Events, nil, func(r *kgo.Record) error {
		ev, err := schema.DecodeEvent(r.Key, r.Value)
		if err != nil {
			return fmt.Errorf("event at %d/%d: %w", r.Partition, r.Offset, err)
		}
		lv.byConv[ev.Conv] = append(lv.byConv[ev.Conv], ev)
		lv.events++
		return nil
	})
	if err != nil {
		return nil, err
	}
	for conv, evs := range lv.byConv {
		ms := map[string][]span{}
		for _, ev := range evs {
			switch ev.Type {
			case parleyv1.EventType_EVENT_TYPE_CREATED, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED:
				for _, u := range ev.Members {
					if s := ms[u]; len(s) == 0 || s[len(s)-1].to != 0 {
						ms[u] = append(s, span{from: ev.Seq})
					}
				}
			case parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED:
				for _, u := range ev.Members {
					if s := ms[u]; len(s) > 0 && s[len(s)-1].to == 0 {
						s[len(s)-1].to = ev.Seq
					}
				}
			}
		}
		lv.members[conv] = ms
	}
	return lv, nil
}

// memberAt reports whether user was a member of conv at seq (the event
// that removed them included: it is theirs to see).
func (lv *logView) memberAt(conv, user string, seq int64) bool {
	for _, s := range lv.members[conv][user] {
		if seq >= s.from && (s.to == 0 || seq <= s.to) {
			return true
		}
	}
	return false
}

// spans says when user was a member of conv, as seq ranges ("none" if
// never).
func (lv *logView) spans(conv, user string) string {
	var out []string
	for _, s := range lv.members[conv][user] {
		if s.to == 0 {
			out = append(out, fmt.Sprintf("%d–", s.from))
		} else {
			out = append(out, fmt.Sprintf("%d–%d", s.from, s.to))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// event returns conv's event at seq, if the log has it where it belongs.
func (lv *logView) event(conv string, seq int64) *parleyv1.Event {
	evs := lv.byConv[conv]
	if seq < 1 || seq > int64(len(evs)) || evs[seq-1].Seq != seq {
		return nil
	}
	return evs[seq-1]
}

func (lv *logView) head(conv string) int64 { return int64(len(lv.byConv[conv])) }

type cmidKey struct{ conv, from, cmid string }

// checkLog: seqs without gap or duplicate, no cmid twice, every acked send
// once at its seq.
func checkLog(v *verdict, lv *logView, sends []*send) {
	at := map[cmidKey][]int64{}
	for conv, evs := range lv.byConv {
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				v.violate(ruleSeqs, "%s: event %d in the log has seq %d", conv, i+1, ev.Seq)
			}
			if ev.Cmid != "" {
				k := cmidKey{ev.Conv, ev.From, ev.Cmid}
				at[k] = append(at[k], ev.Seq)
			}
		}
	}
	for k, seqs := range at {
		if len(seqs) > 1 {
			v.violate(ruleCMIDOnce, "(%s, %s, %s) at seqs %v", k.conv, k.from, k.cmid, seqs)
		}
	}
	for _, s := range sends {
		if !s.acked {
			continue
		}
		seqs := at[cmidKey{s.conv, s.from, s.cmid}]
		if len(seqs) != 1 || seqs[0] != s.seq {
			v.violate(ruleAckedOnce, "(%s, %s, %s) acked at seq %d; the log has it at %v", s.conv, s.from, s.cmid, s.seq, seqs)
		}
	}
}

// checkDevices: each device's deliveries against the log. A static
// conversation is delivered whole, 1..head; the churn group from where the
// user joined (from 1 for its first members) to the head, or to where the
// user was removed.
func checkDevices(v *verdict, lv *logView, l *load) {
	for _, d := range l.devices {
		mine := map[string]bool{}
		for _, conv := range l.convsOf[d.user] {
			mine[conv] = true
		}
		for conv, got := range d.got {
			for _, g := range got {
				if !lv.memberAt(conv, d.user, g.ev.Seq) {
					v.violate(ruleMembersOnly, "%s got %s seq %d (%s) while %s was not a member (member at %s), at %s",
						d.name, conv, g.ev.Seq, g.ev.Type, d.user, lv.spans(conv, d.user), g.at.UTC().Format("15:04:05.000"))
				}
				want := lv.event(conv, g.ev.Seq)
				if want == nil {
					v.violate(ruleSameAsLog, "%s got %s seq %d, which the log does not have", d.name, conv, g.ev.Seq)
					continue
				}
				w := schema.ToJSON(want)
				if g.ev.MsgID != w.MsgID || g.ev.Type != w.Type || g.ev.From != w.From || g.ev.CMID != w.CMID || g.ev.TS != w.TS {
					v.violate(ruleSameAsLog, "%s got %s seq %d as %+v; the log has %+v", d.name, conv, g.ev.Seq, g.ev, w)
				}
			}
			for i := 1; i < len(got); i++ {
				if got[i].ev.Seq != got[i-1].ev.Seq+1 {
					v.violate(ruleDelivered, "%s delivered %s seq %d after %d", d.name, conv, got[i].ev.Seq, got[i-1].ev.Seq)
				}
			}
		}
		for conv := range mine {
			got := d.got[conv]
			if len(got) == 0 || got[0].ev.Seq != 1 || got[len(got)-1].ev.Seq != lv.head(conv) {
				v.violate(ruleDelivered, "%s delivered %s %s; want 1..%d", d.name, conv, seqRange(got), lv.head(conv))
			}
		}
		spans := lv.members[l.churn][d.user]
		if len(spans) == 0 {
			continue
		}
		got := d.got[l.churn]
		last := spans[len(spans)-1]
		switch {
		case spans[0].from == 1 && (len(got) == 0 || got[0].ev.Seq != 1):
			v.violate(ruleDelivered, "%s, a first member, delivered the churn group %s; want it from 1", d.name, seqRange(got))
		case last.to == 0 && (len(got) == 0 || got[len(got)-1].ev.Seq != lv.head(l.churn)):
			v.violate(ruleDelivered, "%s, a member, delivered the churn group %s; want it to %d", d.name, seqRange(got), lv.head(l.churn))
		}
	}
}

func seqRange(got []delivery) string {
	if len(got) == 0 {
		return "not at all"
	}
	return fmt.Sprintf("%d..%d (%d events)", got[0].ev.Seq, got[len(got)-1].ev.Seq, len(got))
}

// checkStore: the store holds every conversation's events exactly as the
// log does, and nothing past them.
func checkStore(ctx context.Context, v *verdict, lv *logView, st store.Store) error {
	convs := make([]string, 0, len(lv.byConv))
	for conv := range lv.byConv {
		convs = append(convs, conv)
	}
	sort.Strings(convs)
	for _, conv := range convs {
		var stored []*parleyv1.Event
		after := int64(0)
		for {
			evs, more, err := st.Events(ctx, conv, store.Range{After: after, Limit: 1000})
			if err != nil {
				return fmt.Errorf("reading %s from the store: %w", conv, err)
			}
			stored = append(stored, evs...)
			if !more || len(evs) == 0 {
				break
			}
			after = evs[len(evs)-1].Seq
		}
		want := lv.byConv[conv]
		if len(stored) != len(want) {
			v.violate(ruleStore, "%s: the store has %d events, the log %d", conv, len(stored), len(want))
		}
		for i := range min(len(stored), len(want)) {
			if !proto.Equal(stored[i], want[i]) {
				v.violate(ruleStore, "%s seq %d: the store has %v, the log %v", conv, want[i].Seq, stored[i], want[i])
			}
		}
		head, err := st.Conversation(ctx, conv)
		if err != nil {
			return fmt.Errorf("reading %s's head from the store: %w", conv, err)
		}
		if head.LastSeq != lv.head(conv) {
			v.violate(ruleStore, "%s: the store's head is %d, the log's %d", conv, head.LastSeq, lv.head(conv))
		}
	}
	return nil
}

// recovery is how long after a process went away every static
// conversation delivered again: for each conversation, the first delivery
// to any device of an event sequenced after the moment.
type recovery struct {
	what string
	at   time.Time
	took time.Duration
	conv string
}

func recoveries(lv *logView, l *load, gone []disruption) []recovery {
	first := map[string]map[int64]time.Time{} // conv → seq → first delivery
	for _, d := range l.devices {
		for conv, got := range d.got {
			m := first[conv]
			if m == nil {
				m = map[int64]time.Time{}
				first[conv] = m
			}
			for _, g := range got {
				if t, ok := m[g.ev.Seq]; !ok || g.at.Before(t) {
					m[g.ev.Seq] = g.at
				}
			}
		}
	}
	var out []recovery
	for _, g := range gone {
		r := recovery{what: g.what, at: g.at}
		for _, conv := range l.static {
			for _, ev := range lv.byConv[conv] {
				if ev.Ts < g.at.UnixMilli() {
					continue
				}
				if t, ok := first[conv][ev.Seq]; ok {
					if took := t.Sub(g.at); took > r.took {
						r.took, r.conv = took, conv
					}
				}
				break
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b recovery) int { return int(b.took - a.took) })
	return out
}

func (v *verdict) String() string {
	var b strings.Builder
	for _, r := range rules {
		fmt.Fprintf(&b, "  %-70s %d violations\n", r, v.counts[r])
		for _, e := range v.examples[r] {
			fmt.Fprintf(&b, "      %s\n", e)
		}
	}
	return b.String()
}
