package connector_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/schema"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/pebblestore"
)

var apiKey = []byte(strings.Repeat("k", 24))

// api calls the HTTP API of a gateway.
type api struct {
	t    *testing.T
	base string
	key  string
	hc   *http.Client
}

func newAPI(t *testing.T, addr string) *api {
	return &api{t: t, base: "http://" + addr, key: string(apiKey), hc: &http.Client{Timeout: 30 * time.Second}}
}

// do sends a request (body: nil, a string sent as is, or a value encoded
// as JSON) and returns the status and the decoded JSON answer.
func (a *api) do(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		a.t.Fatalf("%s %s: content type %q (%d %s)", method, path, ct, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		a.t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, path, raw, err)
	}
	return resp.StatusCode, out
}

// want checks an answer's status and, for errors, its code.
func (a *api) want(status int, code string, method, path string, body any) map[string]any {
	a.t.Helper()
	got, out := a.do(method, path, body)
	if got != status || (code != "" && out["code"] != code) || (code == "" && status >= 400 && out["code"] == nil) {
		a.t.Fatalf("%s %s %v: %d %v, want %d %s", method, path, body, got, out, status, code)
	}
	if status >= 400 && (out["message"] == nil || out["message"] == "") {
		a.t.Fatalf("%s %s: error without a message: %v", method, path, out)
	}
	return out
}

// events returns a conversation's stored events (one page of up to 1000).
func (a *api) events(conv string) []map[string]any {
	a.t.Helper()
	_, out := a.do(http.MethodGet, "/v1/conversations/"+conv+"/events?after=0&limit=1000", nil)
	var evs []map[string]any
	list, _ := out["events"].([]any)
	for _, e := range list {
		evs = append(evs, e.(map[string]any))
	}
	return evs
}

// TestHTTPAPI: every endpoint's success and error cases, on a gateway with
// a sequencer and a writer behind it.
func TestHTTPAPI(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey})
	a := newAPI(t, g.addr)
	const post, get = http.MethodPost, http.MethodGet

	// Health needs no key.
	anon := newAPI(t, g.addr)
	anon.key = ""
	anon.want(200, "", get, "/healthz", nil)
	eventually(t, "the node to be ready", func() bool { code, _ := anon.do(get, "/readyz", nil); return code == 200 })

	// The key: missing, wrong, wrong scheme.
	anon.want(401, "unauthorized", post, "/v1/tokens", map[string]any{"user": "alice"})
	wrong := newAPI(t, g.addr)
	wrong.key = strings.Repeat("x", 24)
	wrong.want(401, "unauthorized", post, "/v1/tokens", map[string]any{"user": "alice"})
	wrong.key = string(apiKey) + "x"
	wrong.want(401, "unauthorized", get, "/v1/users/alice/conversations", nil)

	// Routes and methods.
	a.want(404, "not_found", get, "/v1/nope", nil)
	a.want(404, "not_found", get, "/metrics", nil)
	a.want(404, "not_found", get, "/nope", nil)
	a.want(405, "bad_request", get, "/v1/tokens", nil)
	a.want(405, "bad_request", post, "/v1/users/alice/conversations", nil)

	// Tokens.
	tok := a.want(200, "", post, "/v1/tokens", map[string]any{"user": "alice", "ttl_s": 3600})["token"].(string)
	if user, err := auth.Verify(secret, tok, time.Now()); err != nil || user != "alice" {
		t.Fatalf("the token is for %q (%v)", user, err)
	}
	if _, err := auth.Verify(secret, tok, time.Now().Add(time.Hour+time.Minute)); err == nil {
		t.Fatal("a token of ttl_s 3600 is valid after an hour")
	}
	a.want(400, "bad_request", post, "/v1/tokens", map[string]any{"user": "alice", "ttl_s": 0})
	a.want(400, "bad_request", post, "/v1/tokens", map[string]any{"user": "alice", "ttl_s": 31 * 24 * 3600})
	a.want(400, "bad_request", post, "/v1/tokens", map[string]any{"user": "no spaces"})
	a.want(400, "bad_request", post, "/v1/tokens", `{"user":`)
	a.want(400, "bad_request", post, "/v1/tokens", "")
	if out := a.want(400, "bad_request", post, "/v1/tokens", `{"user":"alice","ttl_s":"soon"}`); out["message"] != "ttl_s: a JSON string where the API wants a whole number in range" {
		t.Fatalf("a wrongly typed field: %v", out)
	}
	if out := a.want(400, "bad_request", post, "/v1/tokens", `["alice"]`); out["message"] != "the body must be a JSON object" {
		t.Fatalf("an array body: %v", out)
	}
	if out := a.want(400, "bad_request", post, "/v1/tokens", `{"user":"alice","user":"root"}`); out["message"] != `the body has the name "user" more than once` {
		t.Fatalf("a name given twice: %v", out)
	}
	// Names match exactly: "User" is not "user".
	if out := a.want(400, "bad_request", post, "/v1/tokens", `{"User":"alice"}`); out["message"] != "user must be 1-64 characters of [A-Za-z0-9_.-]" {
		t.Fatalf("a name in other case: %v", out)
	}

	// A group, created as alice with members that name her.
	group := a.want(200, "", post, "/v1/conversations", map[string]any{"kind": "group", "members": []string{"alice", "bob"}, "title": "team", "as": "alice"})["conv"].(string)
	if _, err := ksuid.Parse(group); err != nil {
		t.Fatalf("group id %q: %v", group, err)
	}
	// With a chosen id and a cmid, a retry yields the same group.
	gid := ksuid.New().String()
	for range 2 {
		if c := a.want(200, "", post, "/v1/conversations", map[string]any{"kind": "group", "conv": gid, "cmid": "g-1", "members": []string{"bob"}, "as": "alice"})["conv"]; c != gid {
			t.Fatalf("create of %s answered %v", gid, c)
		}
	}
	a.want(400, "bad_request", post, "/v1/conversations", map[string]any{"kind": "group", "conv": gid, "cmid": "g-2", "members": []string{"bob"}, "as": "alice"})
	a.want(400, "bad_request", post, "/v1/conversations", map[string]any{"kind": "group", "conv": "not-a-ksuid", "as": "alice"})
	a.want(400, "bad_request", post, "/v1/conversations", map[string]any{"kind": "party", "as": "alice"})
	a.want(400, "bad_request", post, "/v1/conversations", map[string]any{"kind": "group", "members": []string{"bob"}})
	a.want(400, "bad_request", post, "/v1/conversations", map[string]any{"kind": "group", "members": []string{"b b"}, "as": "alice"})
	// A direct conversation has one id for the pair, whoever creates it.
	dm := a.want(200, "", post, "/v1/conversations", map[string]any{"kind": "direct", "members": []string{"bob"}, "as": "alice"})["conv"].(string)
	if dm != schema.DirectConvID("alice", "bob") {
		t.Fatalf("direct id %s", dm)
	}
	if again := a.want(200, "", post, "/v1/conversations", map[string]any{"kind": "direct", "members": []string{"alice", "bob"}, "as": "bob"})["conv"]; again != dm {
		t.Fatalf("the direct conversation created again from bob's side: %v, want %s", again, dm)
	}
	a.want(400, "bad_request", post, "/v1/conversations", map[string]any{"kind": "direct", "members": []string{"bob", "carol"}, "as": "alice"})

	// Members: the owner adds the bot and carol, and removes carol.
	a.want(200, "", post, "/v1/conversations/"+group+"/members", map[string]any{"add": []string{"bot", "carol"}, "as": "alice"})
	a.want(200, "", post, "/v1/conversations/"+group+"/members", map[string]any{"remove": []string{"carol"}, "as": "alice"})
	a.want(403, "forbidden", post, "/v1/conversations/"+group+"/members", map[string]any{"add": []string{"dave"}, "as": "bob"})
	a.want(400, "bad_request", post, "/v1/conversations/"+group+"/members", map[string]any{"as": "alice"})
	a.want(400, "bad_request", post, "/v1/conversations/"+dm+"/members", map[string]any{"add": []string{"dave"}, "as": "alice"})
	a.want(404, "not_found", post, "/v1/conversations/"+ksuid.New().String()+"/members", map[string]any{"add": []string{"dave"}, "as": "alice"})

	// Answers hold exactly the documented fields.
	if out := a.want(200, "", post, "/v1/conversations/"+group+"/members", map[string]any{"add": []string{"bob"}, "as": "alice"}); len(out) != 0 {
		t.Fatalf("members answered %v, want {}", out)
	}

	// Messages: a bot message posted twice with one cmid appears once.
	msg := map[string]any{"from": "bot", "cmid": "bot-1", "kind": "text", "body": map[string]any{"text": "build passed"}}
	first := a.want(200, "", post, "/v1/conversations/"+group+"/messages", msg)
	retry := a.want(200, "", post, "/v1/conversations/"+group+"/messages", msg)
	if len(first) != 2 || first["msg_id"] == "" || first["msg_id"] != retry["msg_id"] || first["seq"] != retry["seq"] || first["seq"] != 4.0 {
		t.Fatalf("the bot's message %v and its retry %v: want one msg_id and seq 4", first, retry)
	}
	a.want(403, "forbidden", post, "/v1/conversations/"+group+"/messages", map[string]any{"from": "mallory", "cmid": "m", "body": "let me in"})
	a.want(403, "forbidden", post, "/v1/conversations/"+group+"/messages", map[string]any{"from": "carol", "cmid": "c", "body": "removed"})
	a.want(404, "not_found", post, "/v1/conversations/"+ksuid.New().String()+"/messages", map[string]any{"from": "bot", "cmid": "x", "body": 1})
	a.want(400, "bad_request", post, "/v1/conversations/"+group+"/messages", map[string]any{"from": "bot", "body": 1})
	a.want(400, "bad_request", post, "/v1/conversations/"+group+"/messages", map[string]any{"from": "bot", "cmid": "y"})
	a.want(400, "bad_request", post, "/v1/conversations/"+group+"/messages", `{"from":"bot","cmid":"z","body":}`)
	a.want(400, "bad_request", post, "/v1/conversations/"+group+"/messages", `[1,2]`)
	a.want(400, "bad_request", post, "/v1/conversations/bad~id/messages", map[string]any{"from": "bot", "cmid": "x", "body": 1})
	a.want(413, "too_large", post, "/v1/conversations/"+group+"/messages", map[string]any{"from": "bot", "cmid": "big", "body": strings.Repeat("x", 70<<10)})

	// Events: the backend's view, no membership check.
	var evs []map[string]any
	eventually(t, "the writer to store the bot's message", func() bool { evs = a.events(group); return len(evs) == 4 })
	types := []string{}
	bots := 0
	for i, e := range evs {
		types = append(types, e["type"].(string))
		if e["seq"] != float64(i+1) || e["conv"] != group {
			t.Fatalf("event %d: %v", i, e)
		}
		if e["cmid"] == "bot-1" {
			bots++
			if e["from"] != "bot" || e["msg_id"] != first["msg_id"] || e["body"].(map[string]any)["text"] != "build passed" {
				t.Fatalf("the bot's message: %v", e)
			}
		}
	}
	if bots != 1 || fmt.Sprint(types) != "[created member_added member_removed message]" {
		t.Fatalf("events %v, %d bot messages; want the bot's message once", types, bots)
	}
	if evs[0]["kind"] != "group" || evs[0]["title"] != "team" || fmt.Sprint(evs[0]["members"]) != "[alice bob]" {
		t.Fatalf("created event: %v", evs[0])
	}
	page := a.want(200, "", get, "/v1/conversations/"+group+"/events?after=1&limit=2", nil)
	if list := page["events"].([]any); len(list) != 2 || list[0].(map[string]any)["seq"] != 2.0 || page["more"] != true {
		t.Fatalf("a forward page: %v", page)
	}
	page = a.want(200, "", get, "/v1/conversations/"+group+"/events?before=4&limit=2", nil)
	if list := page["events"].([]any); len(list) != 2 || list[0].(map[string]any)["seq"] != 2.0 || page["more"] != true {
		t.Fatalf("a backward page: %v", page)
	}
	page = a.want(200, "", get, "/v1/conversations/"+group+"/events", nil)
	if list := page["events"].([]any); len(list) != 4 || page["more"] != false {
		t.Fatalf("the default page: %v", page)
	}
	page = a.want(200, "", get, "/v1/conversations/"+group+"/events?after=4", nil)
	if list := page["events"].([]any); len(list) != 0 || page["more"] != false {
		t.Fatalf("past the end: %v", page)
	}
	for _, q := range []string{"limit=1001", "limit=0", "after=1&before=3", "after=-1", "after=x", "limit=1.5", "before=0"} {
		a.want(400, "bad_request", get, "/v1/conversations/"+group+"/events?"+q, nil)
	}
	a.want(404, "not_found", get, "/v1/conversations/"+ksuid.New().String()+"/events", nil)
	a.want(400, "bad_request", get, "/v1/conversations/bad~id/events", nil)

	// A user's conversations, as in sync_ok.
	var convs map[string]map[string]any
	eventually(t, "the writer to store the direct conversation", func() bool {
		out := a.want(200, "", get, "/v1/users/bob/conversations", nil)
		convs = map[string]map[string]any{}
		for _, c := range out["convs"].([]any) {
			m := c.(map[string]any)
			convs[m["conv"].(string)] = m
		}
		return len(convs) == 3 && convs[group]["last_seq"] == 4.0
	})
	if convs[group]["kind"] != "group" || convs[group]["title"] != "team" || convs[group]["unread"] != 1.0 ||
		convs[dm]["kind"] != "direct" || convs[gid] == nil {
		t.Fatalf("bob's conversations: %v", convs)
	}
	if out := a.want(200, "", get, "/v1/users/nobody/conversations", nil); fmt.Sprint(out) != "map[convs:[]]" {
		t.Fatalf("a user in no conversation: %v", out)
	}
	a.want(400, "bad_request", get, "/v1/users/no~one/conversations", nil)

	// The WebSocket endpoint is still there, and the token from the API
	// opens it.
	ws, _, err := g.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	conn := &client{t: t, conn: ws}
	if r := conn.call(map[string]any{"op": "auth", "id": "a", "token": tok, "device": "phone"}); r["op"] != "auth_ok" || r["user"] != "alice" {
		t.Fatalf("auth with the API's token: %v", r)
	}
}

// rawRequest writes head (and then body, unless nil) on a fresh connection
// and returns the answer's status and JSON body.
func rawRequest(t *testing.T, addr, head string, body []byte) (int, map[string]any) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	if body != nil {
		// The server may answer and close before it has read it all.
		_, _ = c.Write(body)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer %d is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// TestHTTPAPITooLarge: a body over 1 MiB gets 413 too_large, whether its
// length is declared or it comes in chunks, and whether or not it is sent.
func TestHTTPAPITooLarge(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey})
	auth := "Authorization: Bearer " + string(apiKey) + "\r\n"
	big := bytes.Repeat([]byte("x"), 2<<20)
	for name, tc := range map[string]struct {
		head string
		body []byte
	}{
		"declared, not sent": {"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2097152\r\n\r\n", nil},
		"declared and sent":  {"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2097152\r\n\r\n", big},
		"chunked": {"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n",
			append(append([]byte(fmt.Sprintf("%x\r\n", len(big))), big...), "\r\n0\r\n\r\n"...)},
		"small chunks": {"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n",
			bytes.Repeat([]byte("10000\r\n"+strings.Repeat("y", 0x10000)+"\r\n"), 20)},
	} {
		status, out := rawRequest(t, g.addr, tc.head, tc.body)
		if status != http.StatusRequestEntityTooLarge || out["code"] != "too_large" {
			t.Errorf("%s: %d %v, want 413 too_large", name, status, out)
		}
	}
	// Under the limit, the same way, is served.
	status, out := rawRequest(t, g.addr, "POST /v1/tokens HTTP/1.1\r\nHost: x\r\n"+auth+"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
		[]byte("10\r\n{\"user\":\"alice\"}\r\n0\r\n\r\n"))
	if status != 200 || out["token"] == nil {
		t.Fatalf("a small chunked request: %d %v", status, out)
	}
}

// TestHTTPAPIWithoutKey: with no API key configured, the API answers 503
// and the rest of the listener works.
func TestHTTPAPIWithoutKey(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{})
	a := newAPI(t, g.addr)
	a.want(503, "unavailable", http.MethodPost, "/v1/tokens", map[string]any{"user": "alice"})
	a.key = ""
	a.want(503, "unavailable", http.MethodGet, "/v1/users/alice/conversations", nil)
	a.want(200, "", http.MethodGet, "/healthz", nil)
	g.login(t, "alice", "phone")

	e := newEnv(t)
	c := e.commander("node-short", 10*time.Second, nil)
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := connector.NewGateway(connector.GatewayConfig{TokenSecret: secret, APIKey: []byte("short")}, c, st); err == nil {
		t.Fatal("a 5-byte API key was accepted")
	}
}

// pingStore is a store whose Ping fails while down is set.
type pingStore struct {
	store.Store
	down atomic.Bool
}

func (s *pingStore) Ping(context.Context) error {
	if s.down.Load() {
		return errors.New("store down")
	}
	return nil
}

// TestHTTPAPIReadyz: /readyz names the failing check while the store or
// the log is unreachable, and recovers with them.
func TestHTTPAPIReadyz(t *testing.T) {
	e := newEnv(t)
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ps := &pingStore{Store: st}
	c := e.commander("node-r", 10*time.Second, nil)
	g := runGateway(t, e, connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: secret, APIKey: apiKey}, c, ps)
	a := newAPI(t, g.Addr().String())
	a.key = ""
	ready := func() (int, map[string]any) { return a.do(http.MethodGet, "/readyz", nil) }
	if code, out := ready(); code != 200 || out["ok"] != true {
		t.Fatalf("readyz: %d %v", code, out)
	}
	ps.down.Store(true)
	if code, out := ready(); code != 503 || out["code"] != "unavailable" || out["message"] != "not ready: store" ||
		out["checks"].(map[string]any)["store"] != "failed" || out["checks"].(map[string]any)["log"] != "ok" {
		t.Fatalf("readyz with the store down: %d %v", code, out)
	}
	// With the key, the errors themselves.
	keyed := newAPI(t, g.Addr().String())
	if code, out := keyed.do(http.MethodGet, "/readyz", nil); code != 503 || out["message"] != "not ready: store: store down" ||
		out["checks"].(map[string]any)["store"] != "store down" {
		t.Fatalf("readyz with the store down, asked with the key: %d %v", code, out)
	}
	ps.down.Store(false)

	// The log: every metadata request fails (the connection is dropped).
	var logDown atomic.Bool
	logDown.Store(true)
	e.broker.Cluster().ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.broker.Cluster().KeepControl()
		if !logDown.Load() {
			return nil, nil, false
		}
		return nil, errors.New("log down"), true
	})
	code, out := keyed.do(http.MethodGet, "/readyz", nil)
	t.Logf("readyz with the log down: %d %v", code, out)
	if code != 503 || !strings.HasPrefix(out["message"].(string), "not ready: log: ") || out["checks"].(map[string]any)["log"] == "ok" ||
		out["checks"].(map[string]any)["store"] != "ok" {
		t.Fatalf("readyz with the log down: %d %v", code, out)
	}
	logDown.Store(false)
	eventually(t, "readyz to recover", func() bool { code, _ := ready(); return code == 200 })
}

// TestHTTPAPIBusy: past the in-flight bound a request gets 429; a command
// whose outcome never comes (nobody sequences) gets 503 after the reply
// timeout.
func TestHTTPAPIBusy(t *testing.T) {
	e := newEnv(t) // no sequencer
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := e.commander("node-b", 1500*time.Millisecond, nil)
	g := runGateway(t, e, connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: secret, APIKey: apiKey, APIMaxInFlight: 1}, c, st)
	a := newAPI(t, g.Addr().String())
	type answer struct {
		code int
		out  map[string]any
	}
	slow := make(chan answer, 1)
	conv := ksuid.New().String()
	go func() { // no t.Fatal off the test's goroutine
		for {
			// Until it gets the one slot (the probes below may hold it).
			req, _ := http.NewRequest(http.MethodPost, "http://"+g.Addr().String()+"/v1/conversations/"+conv+"/messages",
				strings.NewReader(`{"from":"bot","cmid":"x","body":1}`))
			req.Header.Set("Authorization", "Bearer "+string(apiKey))
			var r answer
			if resp, err := http.DefaultClient.Do(req); err == nil {
				r.code = resp.StatusCode
				_ = json.NewDecoder(resp.Body).Decode(&r.out)
				resp.Body.Close()
			}
			if r.code != http.StatusTooManyRequests {
				slow <- r
				return
			}
		}
	}()
	eventually(t, "a request to be refused as rate_limited", func() bool {
		code, out := a.do(http.MethodGet, "/v1/users/alice/conversations", nil)
		if code != 200 && (code != 429 || out["code"] != "rate_limited") {
			t.Fatalf("while busy: %d %v", code, out)
		}
		return code == 429
	})
	if r := <-slow; r.code != 503 || r.out["code"] != "unavailable" {
		t.Fatalf("a command nobody sequences: %d %v, want 503 unavailable", r.code, r.out)
	}
	a.want(200, "", http.MethodGet, "/v1/users/alice/conversations", nil)
}

// runGateway starts a gateway on e until the test ends.
func runGateway(t *testing.T, e *env, cfg connector.GatewayConfig, c *connector.Commander, st store.Store) *connector.Gateway {
	t.Helper()
	g, err := connector.NewGateway(cfg, c, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	e.run(g.Run)
	return g
}

// TestHTTPMalformedRequestLog: a request the server cannot read is
// answered 400 and logged (at debug level) without its bytes, which may
// hold the API key.
func TestHTTPMalformedRequestLog(t *testing.T) {
	var logs testutil.SyncBuffer
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const secretKey = "the-api-key-in-a-bad-request"
	if _, err := io.WriteString(conn, "POST /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+secretKey+"\r\na header line without a colon\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a malformed request got %d, want 400", resp.StatusCode)
	}
	eventually(t, "the server's log line", func() bool { return strings.Contains(logs.String(), "error when reading request headers") })
	if strings.Contains(logs.String(), secretKey) {
		t.Fatalf("the log holds the request's key:\n%s", logs.String())
	}
}
