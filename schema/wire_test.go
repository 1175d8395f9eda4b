package schema

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// stringFields lists the paths to every string field of md, through
// message fields and oneofs, as the schema defines them today.
func stringFields(md protoreflect.MessageDescriptor) [][]protoreflect.FieldDescriptor {
	var out [][]protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch fd.Kind() {
		case protoreflect.StringKind:
			out = append(out, []protoreflect.FieldDescriptor{fd})
		case protoreflect.MessageKind:
			if fd.IsMap() {
				panic("stringFields: a map field " + string(fd.FullName()) + ": teach the walk")
			}
			for _, sub := range stringFields(fd.Message()) {
				out = append(out, append([]protoreflect.FieldDescriptor{fd}, sub...))
			}
		}
	}
	return out
}

// withString sets the string field at path of m to s (one element s, for
// a repeated field).
func withString(m protoreflect.Message, path []protoreflect.FieldDescriptor, s string) {
	for _, fd := range path[:len(path)-1] {
		m = descend(m, fd)
	}
	fd := path[len(path)-1]
	if fd.IsList() {
		m.Mutable(fd).List().Append(protoreflect.ValueOfString(s))
		return
	}
	m.Set(fd, protoreflect.ValueOfString(s))
}

// descend returns the message in m's field fd (the first element of a
// repeated field), made if m lacks it.
func descend(m protoreflect.Message, fd protoreflect.FieldDescriptor) protoreflect.Message {
	if fd.IsList() {
		l := m.Mutable(fd).List()
		if l.Len() == 0 {
			return l.AppendMutable().Message()
		}
		return l.Get(0).Message()
	}
	return m.Mutable(fd).Message()
}

// messageFields lists the paths to every message field of md (and the
// empty path, md itself), through message fields and oneofs.
func messageFields(md protoreflect.MessageDescriptor) [][]protoreflect.FieldDescriptor {
	out := [][]protoreflect.FieldDescriptor{nil}
	fields := md.Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Kind() == protoreflect.MessageKind {
			for _, sub := range messageFields(fd.Message()) {
				out = append(out, append([]protoreflect.FieldDescriptor{fd}, sub...))
			}
		}
	}
	return out
}

func pathName(md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor) string {
	name := string(md.Name())
	for _, fd := range path {
		name += "." + string(fd.Name())
	}
	return name
}

// stateDecoder is a changelog decoder for TestDecodersMatchProto: its
// error, proto.Unmarshal's, counts as undecodable.
func stateDecoder[T any, M interface {
	*T
	proto.Message
}](unmarshal func([]byte, M) error) func([]byte) error {
	return func(v []byte) error {
		if err := unmarshal(v, M(new(T))); err != nil {
			return fmt.Errorf("%w: %v", ErrUndecodable, err)
		}
		return nil
	}
}

// TestDecodersMatchProto: DecodeCommand, DecodeSharedCommand,
// DecodePushBatch, DecodeOutcomeBatch, UnmarshalEvent, DecodeEvent,
// DecodeSharedEvent and the changelog's decoders refuse as undecodable
// what proto.Unmarshal refuses and UnmarshalVT takes (invalid UTF-8 in a
// string field, a broken group among a message's unknown fields), and take
// the rest. Every string field and every message of each is tried, found
// by walking the schema, so a field added later is covered.
func TestDecodersMatchProto(t *testing.T) {
	decoders := []struct {
		msg    proto.Message
		decode func([]byte) error
	}{
		{&parleyv1.Command{}, func(v []byte) error { _, err := DecodeCommand(v); return err }},
		{&parleyv1.Command{}, func(v []byte) error { return DecodeSharedCommand(v, &parleyv1.Command{Conv: "left over"}) }},
		{&parleyv1.PushBatch{}, func(v []byte) error { _, err := DecodePushBatch(v); return err }},
		{&parleyv1.OutcomeBatch{}, func(v []byte) error { _, err := DecodeOutcomeBatch(v); return err }},
		// Undecodable or not: UnmarshalEvent's error is proto.Unmarshal's.
		{&parleyv1.Event{}, func(v []byte) error {
			ev := &parleyv1.Event{Conv: "left over", Seq: 7}
			if err := UnmarshalEvent(v, ev); err != nil {
				return fmt.Errorf("%w: %v", ErrUndecodable, err)
			}
			if ev.Seq == 7 {
				return fmt.Errorf("%w: the event was not reset", ErrUndecodable) // reported as a mismatch
			}
			return nil
		}},
		// Under the key the event names (a mismatch would be malformed).
		{&parleyv1.Event{}, func(v []byte) error {
			var ev parleyv1.Event
			_ = ev.UnmarshalVT(v)
			_, err := DecodeEvent([]byte(ev.Conv), v)
			return err
		}},
		{&parleyv1.Event{}, func(v []byte) error {
			var ev parleyv1.Event
			_ = ev.UnmarshalVT(v)
			_, err := DecodeSharedEvent([]byte(ev.Conv), v)
			return err
		}},
		// The changelog's: their errors too are proto.Unmarshal's.
		{&parleyv1.ConvState{}, stateDecoder(UnmarshalConvState)},
		{&parleyv1.MemberState{}, stateDecoder(UnmarshalMemberState)},
		{&parleyv1.MessageChunk{}, stateDecoder(UnmarshalMessageChunk)},
	}
	// check marshals m with MarshalVT (which writes what proto.Marshal
	// refuses) and decodes it: refused as undecodable if and only if
	// proto.Unmarshal refuses it.
	check := func(name string, m protoreflect.Message, decode func([]byte) error) {
		t.Helper()
		v, err := m.Interface().(interface{ MarshalVT() ([]byte, error) }).MarshalVT()
		if err != nil {
			t.Fatalf("%s: MarshalVT: %v", name, err)
		}
		if m.New().Interface().(interface{ UnmarshalVT([]byte) error }).UnmarshalVT(v) != nil {
			t.Fatalf("%s: UnmarshalVT refuses %q", name, v)
		}
		perr := proto.Unmarshal(v, m.New().Interface())
		if err := decode(v); errors.Is(err, ErrUndecodable) != (perr != nil) {
			t.Errorf("%s (%q): the decoder says %v, proto.Unmarshal %v", name, v, err, perr)
		}
	}
	// A group of field 200 ended as field 201: proto.Unmarshal refuses it.
	brokenGroup := protowire.AppendTag(protowire.AppendTag(nil, 200, protowire.StartGroupType), 201, protowire.EndGroupType)
	unknownVarint := protowire.AppendVarint(protowire.AppendTag(nil, 250, protowire.VarintType), 1)
	for _, d := range decoders {
		md := d.msg.ProtoReflect().Descriptor()
		paths := stringFields(md)
		if len(paths) == 0 {
			t.Fatalf("%s: no string fields found", md.Name())
		}
		for _, path := range paths {
			for _, s := range []string{"\xff", "ok \xe2\x82", "ok é"} {
				m := d.msg.ProtoReflect().New()
				withString(m, path, s)
				check(pathName(md, path)+" = "+strconv.Quote(s), m, d.decode)
			}
		}
		for _, path := range messageFields(md) {
			for _, unknown := range [][]byte{brokenGroup, unknownVarint} {
				m := d.msg.ProtoReflect().New()
				sub := m
				for _, fd := range path {
					sub = descend(sub, fd)
				}
				sub.SetUnknown(unknown)
				check(fmt.Sprintf("%s with unknown fields %q", pathName(md, path), unknown), m, d.decode)
			}
		}
	}
}
