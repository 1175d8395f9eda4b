package connector

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/segmentio/ksuid"
	"github.com/valyala/fasthttp"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// The decoders of what clients and the backend send: WebSocket frames and
// HTTP API requests. Each is a pure function of its input (and the time,
// and the token secret), called by the handler that serves the input and
// by the fuzz targets in decode_fuzz_test.go, so that what is fuzzed is
// what runs.
//
// JSON input is decoded by github.com/go-json-experiment/json, the
// implementation of Go's encoding/json/v2, with its default, strict
// rules: the text must be UTF-8, a name may not appear twice in an object,
// and names match struct tags exactly (case included). Unknown names are
// ignored. Parsing client frames was the connector's largest cost in the
// dm benchmark (encoding/json, 9.5% of the server); BenchmarkDecodeSendFrame
// (decoding a send frame and making its command) went from 2.6 µs and 17
// allocations with encoding/json to 1.2-1.5 µs and 6, and to 0.9 µs and 4
// when simple frames began taking a shorter way (parseFlat) and a send's
// command one allocation.

// inputError is an input refused before anything reaches the log: the
// client error code (schema.Code*) and a message for the client.
type inputError struct {
	code, msg string
}

func badRequest(format string, args ...any) *inputError {
	return &inputError{code: schema.CodeBadRequest, msg: fmt.Sprintf(format, args...)}
}

// parseFrame decodes a client frame (PROTOCOL.md §2) that is not the first.
// A frame that is not a JSON object fitting a request gets an error; req
// then holds what could be read of it (its id, for the error reply).
func parseFrame(data []byte) (*request, *inputError) {
	req := new(request)
	if parseFlat(data, req) {
		return req, nil
	}
	*req = request{}
	if err := json.Unmarshal(data, req); err != nil {
		if req.ID == "" {
			// Decoding stops at the first error: the id may come after it.
			var id struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(data, &id) == nil {
				req.ID = id.ID
			}
		}
		return req, jsonError(err, data, "frame", "protocol")
	}
	return req, nil
}

// parseFlat decodes the frames clients send most (sends, reads, pings)
// when they take a simple form: one JSON object whose names are
// request fields, each once, written without escapes; whose strings are
// printable ASCII without escapes; whose numbers are integers of at most
// 18 digits; and whose body is any JSON value that json.Unmarshal would
// take. Whitespace between tokens is allowed. It reports false, leaving
// req in any state, for anything else, which json.Unmarshal then decides.
// What it takes, it decodes as json.Unmarshal does (FuzzRequestFrame holds
// the two to the same result), in under half the time (a send frame: 0.6
// µs against 1.35), in two allocations besides req: the strings share one
// copy of the frame, and the body has its own.
func parseFlat(data []byte, req *request) bool {
	type field struct{ from, to int } // data[from:to]
	var (
		strs     [8]field // the string fields, in flatField's order
		have     uint16   // strs present, by index; then target, seq, limit and body at 8-11
		body     field
		nums     [3]int64 // target, seq, limit
		lo, hi   = len(data), 0
		i        = skipSpace(data, 0)
		widen    = func(f field) { lo, hi = min(lo, f.from), max(hi, f.to) }
		haveBody = uint16(1) << 11
	)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipSpace(data, i+1) == len(data)
	}
	for {
		name, ok := plainString(data, i)
		if !ok {
			return false
		}
		i = skipSpace(data, name.to+1)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		k := flatField(data[name.from:name.to])
		if k < 0 || have&(1<<k) != 0 {
			return false // unknown (its value may be anything), or repeated
		}
		have |= 1 << k
		switch {
		case k < len(strs):
			s, ok := plainString(data, i)
			if !ok {
				return false
			}
			strs[k] = field{s.from, s.to}
			widen(strs[k])
			i = s.to + 1
		case k < 11:
			n, end, ok := schema.ParseJSONInt(data, i)
			if !ok {
				return false
			}
			nums[k-len(strs)] = n
			i = end
		default:
			end, ok := valueEnd(data, i)
			// The frame is a level deeper than its body: a body that may be
			// near the decoder's nesting limit (it takes as many bytes) is
			// left to the decoder.
			if !ok || end-i >= maxJSONDepth-1 || !jsontext.Value(data[i:end]).IsValid() {
				return false
			}
			body = field{i, end}
			i = end
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return false
		}
		if data[i] == '}' {
			if skipSpace(data, i+1) != len(data) {
				return false
			}
			break
		}
		if data[i] != ',' {
			return false
		}
		i = skipSpace(data, i+1)
	}
	all := ""
	if lo < hi {
		all = string(data[lo:hi])
	}
	dst := [len(strs)]*string{&req.Op, &req.ID, &req.Token, &req.Device, &req.Conv, &req.CMID, &req.Kind, &req.Title}
	for k, f := range strs {
		if have&(1<<k) != 0 {
			*dst[k] = all[f.from-lo : f.to-lo]
		}
	}
	req.Target, req.Seq, req.Limit = nums[0], nums[1], int(nums[2])
	if have&haveBody != 0 {
		req.Body = bytes.Clone(data[body.from:body.to])
	}
	return true
}

// flatField is the index of a request field parseFlat reads (strings 0-7,
// target 8, seq 9, limit 10, body 11), or -1.
func flatField(name []byte) int {
	switch string(name) {
	case "op":
		return 0
	case "id":
		return 1
	case "token":
		return 2
	case "device":
		return 3
	case "conv":
		return 4
	case "cmid":
		return 5
	case "kind":
		return 6
	case "title":
		return 7
	case "target":
		return 8
	case "seq":
		return 9
	case "limit":
		return 10
	case "body":
		return 11
	}
	return -1
}

// skipSpace returns the index of the first byte of data at or after i that
// is not JSON whitespace.
func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at data[i] made of printable ASCII
// without escapes: its contents are data[from:to], and its closing quote
// is at to.
func plainString(data []byte, i int) (s struct{ from, to int }, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return s, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return struct{ from, to int }{i + 1, j}, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return s, false
		}
	}
	return s, false
}

// valueEnd returns the index just after the JSON value that starts at
// data[i], judged only by its brackets and strings: whether it is valid
// JSON is for the caller to check.
func valueEnd(data []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			if j = schema.JSONStringEnd(data, j); j < 0 {
				return 0, false
			}
			if depth == 0 {
				return j, true
			}
			j--
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return j, j > i // the end of the frame's object
			}
			if depth--; depth == 0 {
				return j + 1, true
			}
		case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return j, j > i
		}
	}
	return len(data), depth == 0 && len(data) > i
}

// jsonError is the refusal of data, a JSON input (what: "frame" or
// "body") that did not decode into the Go value the protocol or API (by)
// wants: what is wrong, and where.
func jsonError(err error, data []byte, what, by string) *inputError {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		if in := syn.JSONPointer.Parent(); in != "" { // within a value: the body
			return badRequest("%q: an object has the name %q more than once", schema.Clip(string(in)), schema.Clip(syn.JSONPointer.LastToken()))
		}
		return badRequest("the %s has the name %q more than once", what, schema.Clip(syn.JSONPointer.LastToken()))
	case errors.As(err, &syn) && !utf8.Valid(data):
		return badRequest("the %s is not UTF-8 text", what)
	case errors.As(err, &syn) && schema.JSONDepth(data) > maxJSONDepth:
		return badRequest("the %s nests deeper than %d levels", what, maxJSONDepth)
	case errors.As(err, &syn) && strings.Contains(syn.Err.Error(), "surrogate"):
		// A \ud800-\udfff escape without its pair (JSON.stringify writes one
		// for a string cut in the middle of a character) names no character.
		// The decoder exports no error value for it: its text is matched, and
		// should that text change, the case below answers instead.
		return badRequest("%q: a \\u escape is half of a surrogate pair, not a character", schema.Clip(string(syn.JSONPointer)))
	case errors.As(err, &syn):
		return badRequest("the %s is not valid JSON (at byte %d)", what, syn.ByteOffset)
	case errors.As(err, &sem) && sem.JSONPointer != "":
		// The path without its leading slash: "ttl_s", "members/1".
		return badRequest("%s: a JSON %s where the %s wants %s", schema.Clip(strings.TrimPrefix(string(sem.JSONPointer), "/")), kindName(sem.JSONKind), by, wanted(sem.GoType))
	case errors.As(err, &sem):
		return badRequest("the %s must be a JSON object", what)
	default:
		return badRequest("the %s is not valid JSON", what)
	}
}

// maxJSONDepth is the decoder's nesting limit.
const maxJSONDepth = 10000

// kindName names a JSON kind in an error message.
func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	}
	return k.String() // string, number, null
}

// wanted names the JSON a Go type takes, for an error message.
func wanted(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number in range"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another type"
}

// parseAuth decodes and checks a connection's first frame: an auth frame
// whose token verifies with secret at now, and a valid device id. It
// returns the frame and the token's user, or the close a refused
// connection gets (4002 for anything but an auth frame, 4001 for a bad
// token or device).
func parseAuth(data []byte, secret []byte, now time.Time) (*request, string, *CloseError) {
	var req request
	if json.Unmarshal(data, &req) != nil || req.Op != "auth" {
		return nil, "", &CloseError{Code: CloseNoAuth, Reason: "the first frame must be auth"}
	}
	user, err := auth.Verify(secret, req.Token, now)
	if err != nil {
		return nil, "", &CloseError{Code: CloseBadToken, Reason: "bad or expired token"}
	}
	if !schema.ValidUserID(req.Device) {
		return nil, "", &CloseError{Code: CloseBadToken, Reason: "invalid device id"}
	}
	return &req, user, nil
}

// commandsFor turns a request of user (op send, edit, revoke, read, create
// or members) into the commands it makes, in the order they are to be
// sent: one, or for members one per change, the additions first. msg_id,
// ts and reply_to are left for the commander. A create of a group without
// conv gets a new KSUID.
func commandsFor(user string, req *request) ([]*parleyv1.Command, *inputError) {
	if (req.Op == "send" || req.Op == "edit") && schema.JSONDepth(req.Body) > schema.MaxBodyDepth {
		return nil, badRequest("the body nests deeper than %d levels", schema.MaxBodyDepth)
	}
	if req.Op == "send" {
		// Every message: one allocation for the command and its parts.
		s := new(sendCommand)
		s.send = parleyv1.Send{Kind: req.Kind, Body: req.Body}
		if s.send.Kind == "" {
			s.send.Kind = "text"
		}
		s.body.Send = &s.send
		s.cmd = parleyv1.Command{Conv: req.Conv, From: user, Cmid: req.CMID, Body: &s.body}
		if !schema.ValidConvID(s.cmd.Conv) {
			return nil, badRequest("missing or invalid conv")
		}
		s.list[0] = &s.cmd
		return s.list[:], nil
	}
	cmd := &parleyv1.Command{Conv: req.Conv, From: user, Cmid: req.CMID}
	switch req.Op {
	case "edit":
		cmd.Body = &parleyv1.Command_Edit{Edit: &parleyv1.Edit{Target: req.Target, Body: req.Body}}
	case "revoke":
		cmd.Body = &parleyv1.Command_Revoke{Revoke: &parleyv1.Revoke{Target: req.Target}}
	case "read":
		cmd.Body = &parleyv1.Command_Read{Read: &parleyv1.Read{Seq: req.Seq}}
	case "create":
		cr := &parleyv1.Create{Members: req.Members, Title: req.Title}
		switch req.Kind {
		case "direct":
			if len(req.Members) != 1 || !schema.ValidUserID(req.Members[0]) {
				return nil, badRequest("a direct conversation has exactly one other member")
			}
			cr.Kind, cmd.Conv = parleyv1.ConvKind_CONV_KIND_DIRECT, schema.DirectConvID(user, req.Members[0])
		case "group":
			var err *inputError
			if cmd.Conv, err = groupConv(req.Conv); err != nil {
				return nil, err
			}
			cr.Kind = parleyv1.ConvKind_CONV_KIND_GROUP
		default:
			return nil, badRequest(`kind must be "direct" or "group"`)
		}
		cmd.Body = &parleyv1.Command_Create{Create: cr}
	case "members":
		if !schema.ValidConvID(req.Conv) {
			return nil, badRequest("missing or invalid conv")
		}
		return memberCommands(req.Conv, user, req.Add, req.Remove)
	default:
		return nil, badRequest("unknown op")
	}
	if !schema.ValidConvID(cmd.Conv) {
		return nil, badRequest("missing or invalid conv")
	}
	return []*parleyv1.Command{cmd}, nil
}

// sendCommand is a send command, its parts and the list commandsFor
// returns it in, allocated together.
type sendCommand struct {
	cmd  parleyv1.Command
	body parleyv1.Command_Send
	send parleyv1.Send
	list [1]*parleyv1.Command
}

// memberCommands is one command per change of a members request, the
// additions first (so that each yields one event).
func memberCommands(conv, as string, add, remove []string) ([]*parleyv1.Command, *inputError) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, badRequest("nothing to add or remove")
	}
	var cmds []*parleyv1.Command
	if len(add) > 0 {
		cmds = append(cmds, &parleyv1.Command{Conv: conv, From: as, Body: &parleyv1.Command_AddMembers{AddMembers: &parleyv1.AddMembers{Users: add}}})
	}
	if len(remove) > 0 {
		cmds = append(cmds, &parleyv1.Command{Conv: conv, From: as, Body: &parleyv1.Command_RemoveMembers{RemoveMembers: &parleyv1.RemoveMembers{Users: remove}}})
	}
	return cmds, nil
}

// historyRange checks a history request and returns the range it asks
// for: a conv, after or before (not both; before at least 1), and a limit
// of 1 to store.MaxRangeLimit (default 100).
func historyRange(req *request) (store.Range, *inputError) {
	limit := req.Limit
	if limit == 0 {
		limit = 100
	}
	r := store.Range{Limit: limit}
	if req.After != nil {
		r.After = *req.After
	}
	if req.Before != nil {
		r.Before = *req.Before
	}
	if !schema.ValidConvID(req.Conv) || r.Validate() != nil || (req.After != nil && req.Before != nil) || (req.Before != nil && *req.Before < 1) {
		return store.Range{}, badRequest("history needs a conv, after or before (not both), and a limit of 1 to %d", store.MaxRangeLimit)
	}
	return r, nil
}

// decodeBody reads an HTTP API body, a JSON object, into v.
func decodeBody(body []byte, v any) *inputError {
	if err := json.Unmarshal(body, v); err != nil {
		return jsonError(err, body, "body", "API")
	}
	return nil
}

// parseTokenRequest reads POST /v1/tokens {"user","ttl_s"}: the user and
// the token's lifetime (1 s to auth.MaxTTL, default defaultTokenTTL).
func parseTokenRequest(body []byte) (string, time.Duration, *inputError) {
	var req struct {
		User string `json:"user"`
		TTL  *int64 `json:"ttl_s"`
	}
	if e := decodeBody(body, &req); e != nil {
		return "", 0, e
	}
	if !schema.ValidUserID(req.User) {
		return "", 0, badRequest("user must be 1-64 characters of [A-Za-z0-9_.-]")
	}
	ttl := defaultTokenTTL
	if req.TTL != nil {
		if *req.TTL < 1 || *req.TTL > int64(auth.MaxTTL/time.Second) {
			return "", 0, badRequest("ttl_s must be 1 to %d", int64(auth.MaxTTL/time.Second))
		}
		ttl = time.Duration(*req.TTL) * time.Second
	}
	return req.User, ttl, nil
}

// parseCreateRequest reads POST /v1/conversations
// {"kind","members","title","as","conv","cmid"}: the create command, by
// the rules of the WebSocket create; members may name "as".
func parseCreateRequest(body []byte) (*parleyv1.Command, *inputError) {
	var req struct {
		Kind    string   `json:"kind"`
		Members []string `json:"members"`
		Title   string   `json:"title"`
		As      string   `json:"as"`
		Conv    string   `json:"conv"`
		CMID    string   `json:"cmid"`
	}
	if e := decodeBody(body, &req); e != nil {
		return nil, e
	}
	if !schema.ValidUserID(req.As) {
		return nil, badRequest("as (the creator) must be a valid user id")
	}
	if req.CMID != "" && !schema.ValidCMID(req.CMID) {
		return nil, badRequest("invalid cmid")
	}
	cr := &parleyv1.Create{Members: req.Members, Title: req.Title}
	cmd := &parleyv1.Command{From: req.As, Cmid: req.CMID, Body: &parleyv1.Command_Create{Create: cr}}
	switch req.Kind {
	case "direct":
		var others []string
		for _, m := range req.Members {
			if m != req.As && !contains(others, m) {
				others = append(others, m)
			}
		}
		if len(others) != 1 || !schema.ValidUserID(others[0]) {
			return nil, badRequest("a direct conversation has exactly one member besides as")
		}
		cr.Kind, cmd.Conv = parleyv1.ConvKind_CONV_KIND_DIRECT, schema.DirectConvID(req.As, others[0])
	case "group":
		var err *inputError
		if cmd.Conv, err = groupConv(req.Conv); err != nil {
			return nil, err
		}
		cr.Kind = parleyv1.ConvKind_CONV_KIND_GROUP
	default:
		return nil, badRequest(`kind must be "direct" or "group"`)
	}
	return cmd, nil
}

// parseMembersRequest reads POST /v1/conversations/{conv}/members
// {"add","remove","as"}: one command per change, the additions first.
func parseMembersRequest(conv string, body []byte) ([]*parleyv1.Command, *inputError) {
	var req struct {
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
		As     string   `json:"as"`
	}
	if e := decodeBody(body, &req); e != nil {
		return nil, e
	}
	if !schema.ValidUserID(req.As) {
		return nil, badRequest("as must be a valid user id")
	}
	return memberCommands(conv, req.As, req.Add, req.Remove)
}

// parseSendRequest reads POST /v1/conversations/{conv}/messages
// {"from","cmid","kind","body"}: the send command (kind defaults to
// "text").
func parseSendRequest(conv string, body []byte) (*parleyv1.Command, *inputError) {
	var req struct {
		From string         `json:"from"`
		CMID string         `json:"cmid"`
		Kind string         `json:"kind"`
		Body jsontext.Value `json:"body"`
	}
	if e := decodeBody(body, &req); e != nil {
		return nil, e
	}
	switch {
	case !schema.ValidUserID(req.From):
		return nil, badRequest("from must be a valid user id")
	case !schema.ValidCMID(req.CMID):
		return nil, badRequest("cmid is required: 1-64 printable ASCII characters")
	case len(req.Body) == 0:
		return nil, badRequest("body is required (any JSON value)")
	case len(req.Body) > schema.MaxBodyLen:
		return nil, &inputError{schema.CodeTooLarge, fmt.Sprintf("body is %d bytes, the limit is %d", len(req.Body), schema.MaxBodyLen)}
	case schema.JSONDepth(req.Body) > schema.MaxBodyDepth:
		return nil, badRequest("body nests deeper than %d levels", schema.MaxBodyDepth)
	}
	if req.Kind == "" {
		req.Kind = "text"
	}
	return &parleyv1.Command{Conv: conv, From: req.From, Cmid: req.CMID,
		Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: req.Kind, Body: req.Body}}}, nil
}

// parseEventsQuery reads the query of GET /v1/conversations/{conv}/events:
// after (>= 0) or before (>= 1), not both, and a limit of 1 to
// store.MaxRangeLimit (default defaultEventsLimit).
func parseEventsQuery(args *fasthttp.Args) (store.Range, *inputError) {
	num := func(name string, def int64) (int64, bool) {
		if !args.Has(name) {
			return def, true
		}
		n, err := strconv.ParseInt(string(args.Peek(name)), 10, 64)
		return n, err == nil && n >= 0
	}
	after, okA := num("after", 0)
	before, okB := num("before", 0)
	limit, okL := num("limit", defaultEventsLimit)
	if !okA || !okB || !okL || (args.Has("after") && args.Has("before")) || (args.Has("before") && before < 1) || limit < 1 || limit > store.MaxRangeLimit {
		return store.Range{}, badRequest("events takes after (>= 0) or before (>= 1), not both, and a limit of 1 to %d", store.MaxRangeLimit)
	}
	return store.Range{After: after, Before: before, Limit: int(limit)}, nil
}

// apiRoute names an endpoint of the HTTP API.
type apiRoute int

const (
	routeNone apiRoute = iota
	routeTokens
	routeCreate
	routeMembers
	routeSend
	routeEvents
	routeUserConversations
)

// parseAPIPath maps a request path under /v1/ to its route, the method it
// takes and the path's segments after /v1/ (seg[1] is the conversation or
// user of the routes that name one); routeNone for no such endpoint.
func parseAPIPath(path string) (apiRoute, string, []string) {
	seg := strings.Split(strings.TrimPrefix(path, "/v1/"), "/")
	switch {
	case len(seg) == 1 && seg[0] == "tokens":
		return routeTokens, fasthttp.MethodPost, seg
	case len(seg) == 1 && seg[0] == "conversations":
		return routeCreate, fasthttp.MethodPost, seg
	case len(seg) == 3 && seg[0] == "conversations" && seg[2] == "members":
		return routeMembers, fasthttp.MethodPost, seg
	case len(seg) == 3 && seg[0] == "conversations" && seg[2] == "messages":
		return routeSend, fasthttp.MethodPost, seg
	case len(seg) == 3 && seg[0] == "conversations" && seg[2] == "events":
		return routeEvents, fasthttp.MethodGet, seg
	case len(seg) == 3 && seg[0] == "users" && seg[2] == "conversations":
		return routeUserConversations, fasthttp.MethodGet, seg
	}
	return routeNone, "", seg
}

// groupConv is the id of a group being created: the KSUID the client chose,
// so that a retry yields the same group rather than a second one, or a new
// one.
func groupConv(conv string) (string, *inputError) {
	if conv == "" {
		return schema.NewID(), nil
	}
	if _, err := ksuid.Parse(conv); err != nil {
		return "", badRequest("a group's conv, if given, must be a KSUID")
	}
	return conv, nil
}
