package sequencer

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestEventTooLarge: with the member limit raised, a command whose event
// would not fit in a record of the log is rejected as TOO_LARGE before it
// changes anything (a record the log refuses would abort every transaction
// holding it, and the partition would stop).
func TestEventTooLarge(t *testing.T) {
	p := newPartition(rules{windowMinAgeMs: 1000, windowMinEntries: 64, maxMembers: 100_000})
	members := make([]string, 30_000)
	for i := range members {
		members[i] = fmt.Sprintf("%s%05d", strings.Repeat("u", 59), i)
	}
	conv := ksuid.New().String()
	create := &parleyv1.Command{Conv: conv, MsgId: "m1", From: "alice",
		Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: members}}}
	ev, out := p.apply(create, 1)
	if ev != nil || out.Reason != parleyv1.Reason_REASON_TOO_LARGE || p.convs[conv] != nil {
		t.Fatalf("create of %d members: %v %v %q; conversation kept: %v", len(members), ev != nil, out.Reason, out.Message, p.convs[conv] != nil)
	}
	// A group that fits, then an addition that would not.
	create.Body.(*parleyv1.Command_Create).Create.Members = members[:10_000]
	if ev, out = p.apply(create, 1); ev == nil || proto.Size(ev) > maxEventBytes {
		t.Fatalf("create of 10,000 members: %v %q", out.Reason, out.Message)
	}
	add := &parleyv1.Command{Conv: conv, MsgId: "m2", From: "alice",
		Body: &parleyv1.Command_AddMembers{AddMembers: &parleyv1.AddMembers{Users: members[5_000:]}}}
	last := p.convs[conv].head.LastSeq
	if ev, out = p.apply(add, 2); ev != nil || out.Reason != parleyv1.Reason_REASON_TOO_LARGE || p.convs[conv].head.LastSeq != last {
		t.Fatalf("add of 20,000 members: %v %q, last seq %d (was %d)", out.Reason, out.Message, p.convs[conv].head.LastSeq, last)
	}
}

// TestBoundedEventBytes: an event without members, every other field at
// the largest validate lets through, encodes within boundedEventBytes (the
// bound that lets checkEventSize skip such events), and that is within
// maxEventBytes.
func TestBoundedEventBytes(t *testing.T) {
	id := func(n int) string { return strings.Repeat("x", n) }
	ev := &parleyv1.Event{
		Conv: id(schema.MaxConvIDLen), Seq: math.MaxInt64, Type: parleyv1.EventType_EVENT_TYPE_CREATED,
		MsgId: id(schema.MaxMsgIDLen), Cmid: id(schema.MaxCMIDLen), From: id(schema.MaxUserIDLen), Ts: math.MinInt64,
		Kind: id(schema.MaxKindLen), Body: []byte(id(schema.MaxBodyLen)), Target: math.MinInt64,
		ConvKind: parleyv1.ConvKind_CONV_KIND_GROUP, Title: id(schema.MaxTitleLen),
	}
	if n := proto.Size(ev); n > boundedEventBytes || boundedEventBytes > maxEventBytes {
		t.Fatalf("an event without members is up to %d bytes; bounded at %d, limit %d", n, boundedEventBytes, maxEventBytes)
	}
}
