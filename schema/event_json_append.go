package schema

import (
	"encoding/json"
	"strconv"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// AppendEventJSON appends ev's protocol JSON form to dst: the object
// json.Marshal(ToJSON(ev)) writes, with the same fields in the same order,
// but without reflection and without checking the body twice. History
// pages and pushes write one per event; this is their hot path.
//
// The output equals json.Marshal's byte for byte except in the body, which
// is written as stored (it is valid JSON: ToJSON checks) where json.Marshal
// would also remove insignificant spaces and escape <, > and & in it.
func AppendEventJSON(dst []byte, ev *parleyv1.Event) []byte {
	return append(AppendEventFields(append(dst, '{'), ev), '}')
}

// AppendEventFields appends the members of AppendEventJSON's object
// without its braces, for a frame that adds its own ({"op":"event",…}).
func AppendEventFields(dst []byte, ev *parleyv1.Event) []byte {
	j := ToJSON(ev)
	dst = append(dst, `"conv":`...)
	dst = AppendJSONString(dst, j.Conv)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, j.Seq, 10)
	dst = append(dst, `,"type":`...)
	dst = AppendJSONString(dst, j.Type)
	for _, f := range [...]struct{ key, val string }{
		{`,"msg_id":`, j.MsgID}, {`,"cmid":`, j.CMID}, {`,"from":`, j.From}, {`,"kind":`, j.Kind}, {`,"title":`, j.Title},
	} {
		if f.val != "" {
			dst = append(dst, f.key...)
			dst = AppendJSONString(dst, f.val)
		}
	}
	if len(j.Body) > 0 {
		dst = append(dst, `,"body":`...)
		dst = append(dst, j.Body...)
	}
	if j.Target != 0 {
		dst = append(dst, `,"target":`...)
		dst = strconv.AppendInt(dst, j.Target, 10)
	}
	if len(j.Members) > 0 {
		dst = append(dst, `,"members":[`...)
		for i, m := range j.Members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendJSONString(dst, m)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"ts":`...)
	return strconv.AppendInt(dst, j.TS, 10)
}

// AppendJSONString appends s as a JSON string, as json.Marshal writes it.
// Ids and names are plain printable ASCII, written as they are; anything
// else goes through encoding/json.
func AppendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
