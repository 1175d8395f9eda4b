package schema

import (
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// The hot paths decode and encode with the generated UnmarshalVT, MarshalVT
// and SizeVT (parley/v1/*_vtproto.pb.go, scripts/gen-proto): two to four
// times faster than the reflective proto.Unmarshal and proto.Marshal, with
// the same wire format. UnmarshalVT is more lenient than proto.Unmarshal:
// it takes string fields that are not valid UTF-8 (proto3 forbids them and
// other languages' decoders refuse them), and unknown fields that
// proto.Unmarshal refuses (a group that does not end where it should).
// DecodeCommand, DecodeSharedCommand, DecodeEvent, DecodeSharedEvent,
// DecodePushBatch, DecodeOutcomeBatch and UnmarshalEvent take UnmarshalVT's
// result (UnmarshalVTUnsafe's, which is the same but shares the input's
// memory, for DecodeSharedCommand, DecodeSharedEvent, DecodePushBatch and
// DecodeOutcomeBatch) only when
// every string is valid UTF-8 and no message has unknown fields; otherwise,
// and when the generated decoder fails (it also refuses a known field with
// another wire type, which proto.Unmarshal keeps as unknown),
// proto.Unmarshal decides.
// Records of this version's producers always take the fast path.
//
// So the decoders take every record proto.Unmarshal takes, refuse only
// records it refuses, and what they return encodes to records every
// consumer reads. They still take three kinds of record that
// proto.Unmarshal refuses and no encoder writes, reading them as the
// message they nearly are: a 10-byte varint whose last byte has more than
// the 64th bit; a singular string field repeated after an occurrence that
// was not UTF-8 (the last occurrence wins, as with every singular field);
// and a tag whose field number is past 2^29-1, which UnmarshalVT cuts to
// 32 bits (2^32+k reads as field k).

// vtMessage is a generated message with its generated decoder.
type vtMessage interface {
	proto.Message
	UnmarshalVT([]byte) error
}

// unmarshal decodes value into m (reset first): UnmarshalVT's result when
// plain holds for it, else proto.Unmarshal's, whose error it returns.
func unmarshal[M vtMessage](value []byte, m M, plain func(M) bool) error {
	return decode(value, m, m.UnmarshalVT, plain)
}

// decode decodes value into m (reset first): the result of fast, one of
// m's generated decoders, when plain holds for it, else proto.Unmarshal's,
// whose error it returns.
func decode[M proto.Message](value []byte, m M, fast func([]byte) error, plain func(M) bool) error {
	proto.Reset(m)
	if fast(value) == nil && plain(m) {
		return nil
	}
	proto.Reset(m)
	return proto.Unmarshal(value, m)
}

// DecodeCommand decodes a record value of the commands topic. The error
// wraps ErrUndecodable; the command's fields are not checked beyond that.
func DecodeCommand(value []byte) (*parleyv1.Command, error) {
	cmd := new(parleyv1.Command)
	if err := unmarshal(value, cmd, plainCommand); err != nil {
		return nil, undecodable("parley.v1.Command", err)
	}
	return cmd, nil
}

// DecodeSharedCommand decodes a record value of the commands topic as
// DecodeCommand does, into cmd (reset first), except that cmd's strings and
// bytes share value's memory (UnmarshalVTUnsafe): value must stay unchanged
// while cmd is in use, and whatever outlives it must be copied, or it keeps
// all of value's memory alive. The sequencer decodes each command with it:
// it keeps only a few of a command's strings, and copying every field was
// about 40 % of decoding a send (BenchmarkDecodeCommand: 418 → 241 ns, 11
// → 4 allocations).
func DecodeSharedCommand(value []byte, cmd *parleyv1.Command) error {
	if err := decode(value, cmd, cmd.UnmarshalVTUnsafe, plainCommand); err != nil {
		return undecodable("parley.v1.Command", err)
	}
	return nil
}

// UnmarshalEvent decodes an event into ev (reset first) as DecodeEvent
// does, without DecodeEvent's checks: for the stores, which read back
// the events they were given. The error is proto.Unmarshal's.
func UnmarshalEvent(value []byte, ev *parleyv1.Event) error {
	return unmarshal(value, ev, plainEvent)
}

// DecodePushBatch decodes the body of a push request (push.proto). The
// error wraps ErrUndecodable.
//
// The batch's strings and bytes share value's memory (UnmarshalVTUnsafe):
// value must stay unchanged while the batch is in use, and whatever
// outlives it must be copied. The push endpoint turns a batch into client
// frames within the request; a push names every user of a busy group on
// the node, and copying the names was most of its allocations.
func DecodePushBatch(value []byte) (*parleyv1.PushBatch, error) {
	b := new(parleyv1.PushBatch)
	if err := decode(value, b, b.UnmarshalVTUnsafe, plainPushBatch); err != nil {
		return nil, undecodable("parley.v1.PushBatch", err)
	}
	return b, nil
}

// DecodeOutcomeBatch decodes a record value of the outcomes topic. The
// error wraps ErrUndecodable.
//
// The batch's strings share value's memory (UnmarshalVTUnsafe), as
// DecodePushBatch's do. The connector answers each outcome's command at
// once and keeps nothing of it.
func DecodeOutcomeBatch(value []byte) (*parleyv1.OutcomeBatch, error) {
	b := new(parleyv1.OutcomeBatch)
	if err := decode(value, b, b.UnmarshalVTUnsafe, plainOutcomeBatch); err != nil {
		return nil, undecodable("parley.v1.OutcomeBatch", err)
	}
	return b, nil
}

// UnmarshalConvState, UnmarshalMemberState and UnmarshalMessageChunk
// decode a record of the sequencer's changelog into m (reset first), as
// UnmarshalEvent does, except that m's strings share value's memory
// (UnmarshalVTUnsafe): value must stay unchanged while m is in use. The
// sequencer loads a conversation's state with them whenever it is not in
// memory, from copies of the stored values that the state then keeps;
// copying each string was more than half of the allocations of loading
// (BenchmarkApplySendsFromStore: 494k → 205k a batch).
func UnmarshalConvState(value []byte, m *parleyv1.ConvState) error {
	return decode(value, m, m.UnmarshalVTUnsafe, plainConvState)
}

// UnmarshalMemberState: see UnmarshalConvState.
func UnmarshalMemberState(value []byte, m *parleyv1.MemberState) error {
	return decode(value, m, m.UnmarshalVTUnsafe, func(m *parleyv1.MemberState) bool {
		return known(m) && utf8.ValidString(m.User)
	})
}

// UnmarshalMessageChunk: see UnmarshalConvState.
func UnmarshalMessageChunk(value []byte, m *parleyv1.MessageChunk) error {
	return decode(value, m, m.UnmarshalVTUnsafe, func(m *parleyv1.MessageChunk) bool {
		return known(m) && plainEntries(m.Entries)
	})
}

// plainCommand reports whether every string field of cmd is valid UTF-8
// and none of its messages has unknown fields (TestDecodersMatchProto holds
// it to the schema).
func plainCommand(cmd *parleyv1.Command) bool {
	if !known(cmd) || !validUTF8(cmd.Conv, cmd.MsgId, cmd.From, cmd.Cmid) {
		return false
	}
	if rt := cmd.ReplyTo; rt != nil && (!known(rt) || !utf8.ValidString(rt.Node)) {
		return false
	}
	switch b := cmd.Body.(type) {
	case *parleyv1.Command_Send:
		return b.Send == nil || known(b.Send) && utf8.ValidString(b.Send.Kind)
	case *parleyv1.Command_Edit:
		return b.Edit == nil || known(b.Edit)
	case *parleyv1.Command_Revoke:
		return b.Revoke == nil || known(b.Revoke)
	case *parleyv1.Command_Create:
		return b.Create == nil || known(b.Create) && utf8.ValidString(b.Create.Title) && validUTF8(b.Create.Members...)
	case *parleyv1.Command_AddMembers:
		return b.AddMembers == nil || known(b.AddMembers) && validUTF8(b.AddMembers.Users...)
	case *parleyv1.Command_RemoveMembers:
		return b.RemoveMembers == nil || known(b.RemoveMembers) && validUTF8(b.RemoveMembers.Users...)
	case *parleyv1.Command_Read:
		return b.Read == nil || known(b.Read)
	}
	return true
}

// plainEvent is plainCommand for an event.
func plainEvent(ev *parleyv1.Event) bool {
	return known(ev) && validUTF8(ev.Conv, ev.MsgId, ev.Cmid, ev.From, ev.Kind, ev.Title) && validUTF8(ev.Members...)
}

// plainPushBatch is plainCommand for a push batch.
func plainPushBatch(b *parleyv1.PushBatch) bool {
	if !known(b) || !utf8.ValidString(b.From) {
		return false
	}
	for _, p := range b.Pushes {
		if p == nil {
			continue
		}
		if !known(p) || !validUTF8(p.Users...) {
			return false
		}
		if p.Event != nil && !plainEvent(p.Event) {
			return false
		}
		if t := p.Typing; t != nil && (!known(t) || !validUTF8(t.Conv, t.From)) {
			return false
		}
	}
	return true
}

// plainOutcomeBatch is plainCommand for a batch of outcomes.
func plainOutcomeBatch(b *parleyv1.OutcomeBatch) bool {
	if !known(b) || !utf8.ValidString(b.Node) {
		return false
	}
	for _, o := range b.Outcomes {
		if o == nil {
			continue
		}
		if !known(o) || !validUTF8(o.MsgId, o.Conv, o.Message) || o.Event != nil && !plainEvent(o.Event) {
			return false
		}
	}
	return true
}

// plainConvState is plainCommand for a conversation's state.
func plainConvState(h *parleyv1.ConvState) bool {
	return known(h) && validUTF8(h.Conv, h.Title, h.Owner, h.CreatedMsgId) && plainEntries(h.Pending)
}

// plainEntries is plainCommand for window entries.
func plainEntries(es []*parleyv1.MessageEntry) bool {
	for _, e := range es {
		if !known(e) || !validUTF8(e.MsgId, e.Cmid, e.From) {
			return false
		}
	}
	return true
}

// known reports whether m has no unknown fields.
func known(m protoreflect.ProtoMessage) bool { return len(m.ProtoReflect().GetUnknown()) == 0 }

func validUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}
