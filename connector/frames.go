package connector

import (
	"encoding/json"
	"strconv"

	"github.com/parley-im/parley/schema"
)

// request is any client frame (PROTOCOL.md §2); fields an op does not use
// are ignored.
type request struct {
	Op      string          `json:"op"`
	ID      string          `json:"id,omitempty"`
	Token   string          `json:"token,omitempty"`
	Device  string          `json:"device,omitempty"`
	Conv    string          `json:"conv,omitempty"`
	CMID    string          `json:"cmid,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Body    json.RawMessage `json:"body,omitempty"`
	Target  int64           `json:"target,omitempty"`
	Seq     int64           `json:"seq,omitempty"`
	Members []string        `json:"members,omitempty"`
	Title   string          `json:"title,omitempty"`
	Add     []string        `json:"add,omitempty"`
	Remove  []string        `json:"remove,omitempty"`
	After   *int64          `json:"after,omitempty"`
	Before  *int64          `json:"before,omitempty"`
	Limit   int             `json:"limit,omitempty"`
}

// reply is any server frame.
type reply struct {
	Op      string             `json:"op"`
	ID      string             `json:"id,omitempty"`
	User    string             `json:"user,omitempty"`
	Device  string             `json:"device,omitempty"`
	Node    string             `json:"node,omitempty"`
	Limits  *connLimits        `json:"limits,omitempty"`
	Conv    string             `json:"conv,omitempty"`
	From    string             `json:"from,omitempty"`
	CMID    string             `json:"cmid,omitempty"`
	MsgID   string             `json:"msg_id,omitempty"`
	Seq     int64              `json:"seq,omitempty"`
	Events  []schema.EventJSON `json:"events,omitempty"`
	More    *bool              `json:"more,omitempty"`
	Code    string             `json:"code,omitempty"`
	Message string             `json:"message,omitempty"`
}

// appendAck appends the ack of a request (reply{Op: "ack", ...}) as
// json.Marshal writes it: the fields in the struct's order, the empty ones
// left out. Every sent message gets one, so it is written without
// reflection.
func appendAck(dst []byte, id, conv, cmid, msgID string, seq int64) []byte {
	dst = append(dst, `{"op":"ack"`...)
	dst = appendStringField(dst, `,"id":`, id)
	dst = appendStringField(dst, `,"conv":`, conv)
	dst = appendStringField(dst, `,"cmid":`, cmid)
	dst = appendStringField(dst, `,"msg_id":`, msgID)
	if seq != 0 {
		dst = strconv.AppendInt(append(dst, `,"seq":`...), seq, 10)
	}
	return append(dst, '}')
}

// appendStringField appends key (`,"name":`) and v as a JSON string,
// unless v is empty (omitempty).
func appendStringField(dst []byte, key, v string) []byte {
	if v == "" {
		return dst
	}
	return schema.AppendJSONString(append(dst, key...), v)
}

func errorReply(id, code, msg string) *reply {
	return &reply{Op: "error", ID: id, Code: code, Message: msg}
}

// connLimits tells a client, in auth_ok, the rate its frames may come at,
// so that it can pace itself instead of meeting rate_limited.
type connLimits struct {
	Rate  float64 `json:"rate"`  // frames per second
	Burst int     `json:"burst"` // frames at once
}
