package connector_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store/pebblestore"
)

// The security cases of the client protocol and the HTTP API, each against
// a real gateway on loopback (sequencer, writer into Pebble, embedded
// broker): forged tokens, API keys, origins, authorization, slow and
// flooding clients, deep and huge JSON, and the internal push endpoint.

// authAnswer dials, sends auth with tok and device, and returns the first
// frame's op, or the close code if the server closed instead.
func (g *gw) authAnswer(t *testing.T, tok, device string) (op string, code int) {
	t.Helper()
	conn, _, err := g.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteJSON(map[string]any{"op": "auth", "id": "a", "token": tok, "device": device}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := conn.ReadMessage()
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return "", ce.Code
	case err != nil:
		t.Fatalf("auth: %v", err)
	}
	var r map[string]any
	_ = json.Unmarshal(data, &r)
	op, _ = r["op"].(string)
	return op, 0
}

// TestSecurityTokens: the WebSocket auth frame is the one place a client
// token is accepted. A forged, expired or not-yet-valid token, or one of
// another algorithm, is closed with 4001; a token anywhere else (the
// upgrade's query or Authorization header, the HTTP API's bearer) counts
// for nothing.
func TestSecurityTokens(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey, AuthTimeout: time.Second})
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	good := map[string]any{"sub": "alice", "exp": exp}
	signed := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if op, code := g.authAnswer(t, testutil.RawJWT(t, map[string]any{"alg": "HS256", "typ": "JWT"}, good, sha256.New, secret, ""), "phone"); op != "auth_ok" {
		t.Fatalf("a well-formed HS256 token by hand: %q, close %d", op, code)
	}
	for name, tok := range map[string]string{
		"alg none":                    signed(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims(good)),
		"alg none, HMAC sig":          testutil.RawJWT(t, map[string]any{"alg": "none"}, good, sha256.New, secret, ""),
		"RS256 header, HMAC sig":      testutil.RawJWT(t, map[string]any{"alg": "RS256"}, good, sha256.New, secret, ""),
		"ES256 header, HMAC sig":      testutil.RawJWT(t, map[string]any{"alg": "ES256"}, good, sha256.New, secret, ""),
		"HS512 with the secret":       signed(jwt.SigningMethodHS512, secret, jwt.MapClaims(good)),
		"HS384 with the secret":       signed(jwt.SigningMethodHS384, secret, jwt.MapClaims(good)),
		"wrong secret":                signed(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), jwt.MapClaims(good)),
		"expired":                     signed(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Minute).Unix()}),
		"nbf in the future":           signed(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": exp, "nbf": now.Add(time.Minute).Unix()}),
		"no exp":                      signed(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}),
		"no sub":                      signed(jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp}),
		"sub not a user id":           signed(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "../alice", "exp": exp}),
		"the API key as a token":      string(apiKey),
		"the token secret as a token": string(secret),
		"empty":                       "",
	} {
		if op, code := g.authAnswer(t, tok, "phone"); code != connector.CloseBadToken {
			t.Errorf("%s: answered %q, close %d; want close %d", name, op, code, connector.CloseBadToken)
		}
	}
	// A good token with a device id that is not one.
	if _, code := g.authAnswer(t, token(t, "alice"), "a/b"); code != connector.CloseBadToken {
		t.Errorf("an invalid device id: close %d, want %d", code, connector.CloseBadToken)
	}

	// A token on the upgrade request authenticates nothing: the first
	// frame must still be auth, with the token in it.
	tok := token(t, "alice")
	for first, want := range map[string]int{
		`{"op":"sync","id":"s"}`:              connector.CloseNoAuth,
		`{"op":"auth","id":"a","device":"d"}`: connector.CloseBadToken,
	} {
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+g.addr+"/v1/ws?token="+tok+"&access_token="+tok,
			http.Header{"Authorization": {"Bearer " + tok}, "Sec-WebSocket-Protocol": {tok}, "Cookie": {"token=" + tok}})
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
			t.Fatal(err)
		}
		if code := closeCode(t, conn); code != want {
			t.Errorf("a token on the upgrade, then %s: close %d, want %d", first, code, want)
		}
		conn.Close()
	}

	// Nor is a client token an API key.
	a := newAPI(t, g.addr)
	a.key = tok
	a.want(401, "unauthorized", http.MethodGet, "/v1/users/alice/conversations", nil)
}

// TestSecurityAPIKey: every API route wants "Authorization: Bearer <key>"
// and answers anything else 401 with WWW-Authenticate, before routing (an
// unknown route without the key is 401 too, so routes cannot be probed).
// The key is compared in constant time (httpapi.go authorized: SHA-256 of
// both sides, subtle.ConstantTimeCompare), which a test cannot observe.
func TestSecurityAPIKey(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey})
	key := string(apiKey)
	conv := ksuid.New().String()
	routes := []struct{ method, path, body string }{
		{http.MethodPost, "/v1/tokens", `{"user":"alice"}`},
		{http.MethodPost, "/v1/conversations", `{"kind":"group","as":"alice","members":["bob"]}`},
		{http.MethodPost, "/v1/conversations/" + conv + "/members", `{"add":["bob"],"as":"alice"}`},
		{http.MethodPost, "/v1/conversations/" + conv + "/messages", `{"from":"alice","cmid":"x","body":1}`},
		{http.MethodGet, "/v1/conversations/" + conv + "/events", ""},
		{http.MethodGet, "/v1/users/alice/conversations", ""},
		{http.MethodGet, "/v1/no-such-route", ""},
	}
	call := func(method, path, body string, header http.Header) (int, http.Header, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+g.addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, resp.Header, out
	}
	jwtTok := token(t, "alice")
	refused := map[string]http.Header{
		"no header":                  {},
		"Bearer, no key":             {"Authorization": {"Bearer"}},
		"Bearer and a space":         {"Authorization": {"Bearer "}},
		"wrong key":                  {"Authorization": {"Bearer " + strings.Repeat("x", len(key))}},
		"key plus a byte":            {"Authorization": {"Bearer " + key + "x"}},
		"key less a byte":            {"Authorization": {"Bearer " + key[:len(key)-1]}},
		"key twice":                  {"Authorization": {"Bearer " + key + key}},
		"Basic key":                  {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString(apiKey)}},
		"Basic user:key":             {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("api:"+key))}},
		"Basic key, not encoded":     {"Authorization": {"Basic " + key}},
		"Token scheme":               {"Authorization": {"Token " + key}},
		"no scheme":                  {"Authorization": {key}},
		"Bearer without a space":     {"Authorization": {"Bearer" + key}},
		"a client token":             {"Authorization": {"Bearer " + jwtTok}},
		"the key in X-Api-Key":       {"X-Api-Key": {key}},
		"the key in a cookie":        {"Cookie": {"api_key=" + key}},
		"the key in Proxy-Authorize": {"Proxy-Authorization": {"Bearer " + key}},
	}
	for _, r := range routes {
		for name, h := range refused {
			status, header, out := call(r.method, r.path, r.body, h)
			if status != http.StatusUnauthorized || out["code"] != "unauthorized" || !strings.HasPrefix(header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s, %s: %d %v (WWW-Authenticate %q); want 401 unauthorized", r.method, r.path, name, status, out, header.Get("WWW-Authenticate"))
			}
		}
		// The key in the query string is not the key either.
		if status, _, _ := call(r.method, r.path+"?api_key="+key+"&access_token="+key, r.body, nil); status != http.StatusUnauthorized {
			t.Errorf("%s %s with the key in the query: %d, want 401", r.method, r.path, status)
		}
	}
	// The scheme is case-insensitive and the key may be padded.
	for _, h := range []string{"Bearer " + key, "bearer " + key, "BEARER  " + key + " "} {
		if status, _, out := call(http.MethodGet, "/v1/users/alice/conversations", "", http.Header{"Authorization": {h}}); status != 200 {
			t.Errorf("Authorization %q: %d %v, want 200", h, status, out)
		}
	}
}

// TestSecurityOrigin: a browser upgrade from a foreign Origin is refused
// with 403 before any WebSocket exists; no Origin (not a browser), the
// listener's own host and the configured origins are allowed; with
// AllowAnyOrigin everything is.
func TestSecurityOrigin(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{AllowedOrigins: []string{"https://app.example"}})
	_, port, _ := net.SplitHostPort(g.addr)
	upgrade := func(addr, origin string) int {
		t.Helper()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/v1/ws", h)
		if err == nil {
			conn.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("upgrade from %q: %v", origin, err)
		}
		return resp.StatusCode
	}
	for _, o := range []string{
		"https://evil.example",
		"null", // sandboxed frames and file: pages
		"https://app.example.evil",
		"https://evil.app.example",
		"http://app.example", // another scheme is another origin
		"https://app.example:443",
		"http://127.0.0.1:" + port + ".evil.example",
		"http://127.0.0.1:" + port + "@evil.example",
		"http://evil.example/127.0.0.1:" + port,
		"http://127.0.0.1:1",
		"http://localhost:" + port, // the same machine by another name
		"127.0.0.1:" + port,        // no scheme
	} {
		if code := upgrade(g.addr, o); code != http.StatusForbidden {
			t.Errorf("Origin %q: %d, want 403", o, code)
		}
	}
	for _, o := range []string{"", "http://" + g.addr, "https://" + g.addr, "https://app.example"} {
		if code := upgrade(g.addr, o); code != http.StatusSwitchingProtocols {
			t.Errorf("Origin %q: %d, want 101", o, code)
		}
	}
	// A refused upgrade leaves the listener serving everyone else.
	alice := g.login(t, "alice", "phone")
	if r := alice.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
		t.Fatalf("after refusals: %v", r)
	}

	// AllowAnyOrigin (the all-in-one default on loopback) allows all.
	c := g.commander("node-any", 10*time.Second, nil)
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	anyGW := runGateway(t, g.env, connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: secret, AllowAnyOrigin: true, DrainWindow: 100 * time.Millisecond}, c, st)
	if code := upgrade(anyGW.Addr().String(), "https://evil.example"); code != http.StatusSwitchingProtocols {
		t.Errorf("AllowAnyOrigin, a foreign Origin: %d, want 101", code)
	}
}

// TestSecurityAuthorization: nobody reads or changes a conversation they
// are not in, or edits or revokes a message that is not theirs (a group's
// owner may revoke any); a removed member reads up to the removal and
// changes nothing; a client cannot speak for another user. The HTTP API's
// "as" and "from" are held to the same rules.
func TestSecurityAuthorization(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey, RatePerSecond: 1000, RateBurst: 1000})
	alice, bob, mallory := g.login(t, "alice", "phone"), g.login(t, "bob", "phone"), g.login(t, "mallory", "laptop")
	n := 0
	call := func(c *client, req map[string]any) map[string]any {
		t.Helper()
		n++
		req["id"] = fmt.Sprint(n)
		return c.call(req)
	}
	want := func(what string, r map[string]any, op, code string) {
		t.Helper()
		if r["op"] != op || (code != "" && r["code"] != code) {
			t.Errorf("%s: %v, want %s %s", what, r, op, code)
		}
	}
	created := call(alice, map[string]any{"op": "create", "kind": "group", "members": []string{"bob"}, "title": "team", "cmid": "g-1", "conv": ksuid.New().String()})
	group, _ := created["conv"].(string)
	if group == "" {
		t.Fatalf("create: %v", created)
	}
	aliceMsg := call(alice, map[string]any{"op": "send", "conv": group, "cmid": "a-1", "body": "from alice"})["seq"]
	// A client cannot name another sender: "from" in a frame is ignored.
	bobMsg := call(bob, map[string]any{"op": "send", "conv": group, "cmid": "b-1", "body": "from bob", "from": "alice"})["seq"]
	if aliceMsg != 2.0 || bobMsg != 3.0 {
		t.Fatalf("sends: seq %v and %v", aliceMsg, bobMsg)
	}
	dm := call(alice, map[string]any{"op": "create", "kind": "direct", "members": []string{"bob"}})["conv"].(string)
	bobDM := call(bob, map[string]any{"op": "send", "conv": dm, "cmid": "d-1", "body": "hi"})["seq"]

	// A non-member: every read and write is forbidden.
	for name, req := range map[string]map[string]any{
		"history":          {"op": "history", "conv": group, "after": 0},
		"history backward": {"op": "history", "conv": group, "before": 100},
		"history default":  {"op": "history", "conv": group},
		"send":             {"op": "send", "conv": group, "cmid": "m-1", "body": "let me in"},
		"edit":             {"op": "edit", "conv": group, "cmid": "m-2", "target": aliceMsg, "body": "hacked"},
		"revoke":           {"op": "revoke", "conv": group, "cmid": "m-3", "target": aliceMsg},
		"read":             {"op": "read", "conv": group, "seq": 2},
		"add herself":      {"op": "members", "conv": group, "add": []string{"mallory"}},
		"add another":      {"op": "members", "conv": group, "add": []string{"dave"}},
		"remove the owner": {"op": "members", "conv": group, "remove": []string{"alice"}},
		"dm history":       {"op": "history", "conv": dm, "after": 0},
		"dm send":          {"op": "send", "conv": dm, "cmid": "m-4", "body": "x"},
	} {
		want("a non-member's "+name, call(mallory, req), "error", "forbidden")
	}
	// Creating the group again, under its id and cmid, does not join it.
	want("a non-member re-creating the group", call(mallory, map[string]any{"op": "create", "kind": "group", "conv": group, "cmid": "g-1", "members": []string{"mallory"}}), "error", "bad_request")
	want("a non-member's history after that", call(mallory, map[string]any{"op": "history", "conv": group, "after": 0}), "error", "forbidden")
	// Typing is not answered, accepted or not.
	mallory.write(map[string]any{"op": "typing", "conv": group})
	want("a ping after typing", call(mallory, map[string]any{"op": "ping"}), "pong", "")

	// A member who is not the author or the owner.
	want("a member editing another's message", call(bob, map[string]any{"op": "edit", "conv": group, "cmid": "b-2", "target": aliceMsg, "body": "x"}), "error", "forbidden")
	want("a member revoking another's message", call(bob, map[string]any{"op": "revoke", "conv": group, "cmid": "b-3", "target": aliceMsg}), "error", "forbidden")
	want("a member adding someone", call(bob, map[string]any{"op": "members", "conv": group, "add": []string{"dave"}}), "error", "forbidden")
	want("a member removing the owner", call(bob, map[string]any{"op": "members", "conv": group, "remove": []string{"alice"}}), "error", "forbidden")
	// The owner edits only her own messages, and may revoke anyone's in a
	// group, not in a direct conversation.
	want("the owner editing another's message", call(alice, map[string]any{"op": "edit", "conv": group, "cmid": "a-2", "target": bobMsg, "body": "x"}), "error", "forbidden")
	want("the owner revoking a member's message", call(alice, map[string]any{"op": "revoke", "conv": group, "cmid": "a-3", "target": bobMsg}), "ack", "")
	want("revoking the other's message in a direct conversation", call(alice, map[string]any{"op": "revoke", "conv": dm, "cmid": "a-4", "target": bobDM}), "error", "forbidden")
	want("editing the other's message in a direct conversation", call(alice, map[string]any{"op": "edit", "conv": dm, "cmid": "a-5", "target": bobDM, "body": "x"}), "error", "forbidden")

	// The store has it all: bob's message is his (not alice's, as his
	// frame claimed), and mallory's sync does not list what she is not in.
	var evs []any
	eventually(t, "the writer to store the group", func() bool {
		evs, _ = call(alice, map[string]any{"op": "history", "conv": group, "after": 0})["events"].([]any)
		return len(evs) == 4
	})
	if e := evs[2].(map[string]any); e["from"] != "bob" || e["seq"] != 3.0 {
		t.Fatalf("bob's message in the store: %v", e)
	}
	if r := call(mallory, map[string]any{"op": "sync"}); r["op"] != "sync_ok" || len(r["convs"].([]any)) != 0 {
		t.Fatalf("a non-member's sync: %v", r)
	}

	// A removed member: reads up to the removal, changes nothing after it.
	want("removing bob", call(alice, map[string]any{"op": "members", "conv": group, "remove": []string{"bob"}}), "ok", "")
	const removedAt = 5.0 // created, 2 messages, a revoke, the removal
	after := call(alice, map[string]any{"op": "send", "conv": group, "cmid": "a-6", "body": "after bob"})["seq"]
	for name, req := range map[string]map[string]any{
		"send":                {"op": "send", "conv": group, "cmid": "b-4", "body": "still here?"},
		"edit of his own":     {"op": "edit", "conv": group, "cmid": "b-5", "target": bobMsg, "body": "x"},
		"revoke of his own":   {"op": "revoke", "conv": group, "cmid": "b-6", "target": bobMsg},
		"read":                {"op": "read", "conv": group, "seq": removedAt},
		"adding himself back": {"op": "members", "conv": group, "add": []string{"bob"}},
	} {
		want("a removed member's "+name, call(bob, req), "error", "forbidden")
	}
	// History is authorized by the store, which learns of the removal from
	// the writer a moment after the sequencer decided it.
	eventually(t, "a removed member's history at the removal to be forbidden", func() bool {
		return call(bob, map[string]any{"op": "history", "conv": group, "after": removedAt})["code"] == "forbidden"
	})
	want("a removed member's history after the removal", call(bob, map[string]any{"op": "history", "conv": group, "after": after}), "error", "forbidden")
	eventually(t, "the writer to store the message after the removal", func() bool {
		evs, _ := call(alice, map[string]any{"op": "history", "conv": group, "after": 0})["events"].([]any)
		return len(evs) == int(after.(float64))
	})
	for _, page := range []map[string]any{
		{"op": "history", "conv": group, "after": 0, "limit": 1000},
		{"op": "history", "conv": group, "before": 1000},
		{"op": "history", "conv": group},
	} {
		r := call(bob, page)
		evs, _ := r["events"].([]any)
		if r["op"] != "history_ok" || len(evs) != int(removedAt) || r["more"] != false || evs[len(evs)-1].(map[string]any)["seq"] != removedAt {
			t.Errorf("a removed member's history %v: %v", page, r)
		}
	}
	eventually(t, "bob's sync to drop the group", func() bool {
		for _, c := range call(bob, map[string]any{"op": "sync"})["convs"].([]any) {
			if c.(map[string]any)["conv"] == group {
				return false
			}
		}
		return true
	})

	// The HTTP API: "as" and "from" must be members, member changes the
	// owner's (or a member leaving).
	a := newAPI(t, g.addr)
	path := "/v1/conversations/" + group
	a.want(403, "forbidden", http.MethodPost, path+"/members", map[string]any{"add": []string{"mallory"}, "as": "mallory"})
	a.want(403, "forbidden", http.MethodPost, path+"/members", map[string]any{"remove": []string{"alice"}, "as": "mallory"})
	a.want(403, "forbidden", http.MethodPost, path+"/members", map[string]any{"add": []string{"bob"}, "as": "bob"})
	a.want(403, "forbidden", http.MethodPost, path+"/messages", map[string]any{"from": "mallory", "cmid": "x", "body": 1})
	a.want(403, "forbidden", http.MethodPost, path+"/messages", map[string]any{"from": "bob", "cmid": "x", "body": 1})
	a.want(400, "bad_request", http.MethodPost, "/v1/conversations", map[string]any{"kind": "group", "conv": group, "cmid": "g-1", "as": "mallory", "members": []string{"mallory"}})
	if out := a.want(200, "", http.MethodGet, "/v1/users/mallory/conversations", nil); len(out["convs"].([]any)) != 0 {
		t.Fatalf("mallory's conversations: %v", out)
	}
	want("mallory, still out", call(mallory, map[string]any{"op": "history", "conv": group, "after": 0}), "error", "forbidden")
}

// serverSockets counts the TCP connections this process holds open on the
// server side of addr's port (established, or closed by the peer but not
// yet here), read from /proc/net/tcp; with peerPort > 0 only those to that
// client port. ok is false where /proc/net/tcp cannot be read.
func serverSockets(addr string, peerPort int) (n int, ok bool) {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	local := fmt.Sprintf(":%04X", port)
	remote := fmt.Sprintf(":%04X", peerPort)
	// The kernel lists the table in pieces, one per read; sockets opened
	// meanwhile can shift a piece's start and list a socket twice, so each
	// is counted once.
	seen := make(map[string]bool)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ok = true
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			// sl local_address rem_address st ...; st 01 ESTABLISHED, 08 CLOSE_WAIT.
			if len(fs) < 4 || !strings.HasSuffix(fs[1], local) || (peerPort > 0 && !strings.HasSuffix(fs[2], remote)) {
				continue
			}
			if (fs[3] == "01" || fs[3] == "08") && !seen[fs[1]+" "+fs[2]] {
				seen[fs[1]+" "+fs[2]] = true
				n++
			}
		}
	}
	return n, ok
}

// endsWithin reads c until the server ends the connection and returns how
// long after start that was; it fails the test if it takes over limit.
func endsWithin(t *testing.T, c net.Conn, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the server held the connection over %v", limit)
	}
	return time.Since(start)
}

// TestSecuritySlowLoris: a client that trickles its upgrade request, never
// finishes it, sends nothing, trickles its auth frame, or pipelines
// requests and never reads the answers, is cut off by the auth timeout
// (the whole request, or the first frame) or the write timeout, while other
// clients connect and talk as usual. The push listener cuts off a request
// that never ends likewise.
func TestSecuritySlowLoris(t *testing.T) {
	const timeout = time.Second
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey, AuthTimeout: timeout, WriteTimeout: timeout, PushListen: "127.0.0.1:0", PushSecret: pushSecret})
	limit := 5 * timeout // a generous bound for a loaded machine
	dial := func(addr string) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	upgradeReq := "GET /v1/ws HTTP/1.1\r\nHost: " + g.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	var wg sync.WaitGroup
	attack := func(name string, run func()) {
		wg.Go(func() {
			start := time.Now()
			run()
			t.Logf("%s: cut off after %v", name, time.Since(start).Round(time.Millisecond))
		})
	}

	// The upgrade request, a byte every 20 ms: 3 s for all of it.
	attack("trickled upgrade", func() {
		c := dial(g.addr)
		start := time.Now()
		go func() {
			tick := time.NewTicker(20 * time.Millisecond) // the attacker's pace
			defer tick.Stop()
			for i := range len(upgradeReq) {
				if _, err := c.Write([]byte{upgradeReq[i]}); err != nil {
					return
				}
				<-tick.C
			}
		}()
		if d := endsWithin(t, c, start, limit); d > 2*time.Second {
			t.Errorf("trickled upgrade: the server read it whole (%v)", d)
		}
	})
	attack("unfinished upgrade", func() {
		c := dial(g.addr)
		start := time.Now()
		_, _ = io.WriteString(c, upgradeReq[:40])
		endsWithin(t, c, start, limit)
	})
	attack("silent connection", func() {
		c := dial(g.addr)
		endsWithin(t, c, time.Now(), limit)
	})
	attack("unfinished API request", func() {
		c := dial(g.addr)
		start := time.Now()
		_, _ = io.WriteString(c, "POST /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+string(apiKey)+"\r\nContent-Length: 100\r\n\r\n{")
		endsWithin(t, c, start, limit)
	})
	// Upgraded, then the auth frame's payload a byte at a time: the auth
	// timeout holds for the whole frame (4002).
	attack("trickled auth frame", func() {
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+g.addr+"/v1/ws", nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		raw := conn.UnderlyingConn()
		payload := []byte(`{"op":"auth","token":"` + strings.Repeat("x", 80) + `","device":"d"}`) // under 126 bytes: a one-byte length
		frame := append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)          // masked with zeros: 3 s at 30 ms a byte
		go func() {
			tick := time.NewTicker(30 * time.Millisecond)
			defer tick.Stop()
			for i := range frame {
				if _, err := raw.Write(frame[i : i+1]); err != nil {
					return
				}
				<-tick.C
			}
		}()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(limit))
		_, _, err = conn.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != connector.CloseNoAuth {
			t.Errorf("trickled auth frame: %v, want close %d", err, connector.CloseNoAuth)
		}
	})
	// Pipelined requests whose answers are never read: the server's writes
	// block once the socket buffers are full, until the write timeout.
	attack("answers never read", func() {
		c := dial(g.addr)
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		localPort := c.LocalAddr().(*net.TCPAddr).Port
		if _, ok := serverSockets(g.addr, localPort); !ok {
			t.Log("no /proc/net/tcp: the never-read case is not checked")
			return
		}
		go func() {
			reqs := []byte(strings.Repeat("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1000))
			for {
				if _, err := c.Write(reqs); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		deadline := time.NewTimer(20 * timeout)
		defer deadline.Stop()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, _ := serverSockets(g.addr, localPort); n == 0 {
				return
			}
			select {
			case <-deadline.C:
				t.Errorf("the server still holds a connection that never read its answers after %v", time.Since(start))
				return
			case <-tick.C:
			}
		}
	})
	// The push listener (fanout's, not public) cuts off a request that
	// never ends after its own read timeout (10 s).
	attack("unfinished push", func() {
		c := dial(g.g.PushAddr().String())
		start := time.Now()
		_, _ = io.WriteString(c, "POST "+connector.PushPath+" HTTP/1.1\r\nHost: x\r\n"+connector.PushSecretHeader+": ")
		endsWithin(t, c, start, 30*time.Second)
	})

	// Meanwhile, everyone else is served.
	for i := range 3 {
		c := g.login(t, fmt.Sprint("bystander-", i), "phone")
		if r := c.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
			t.Fatalf("a bystander during the attack: %v", r)
		}
	}
	if code, out := newAPI(t, g.addr).do(http.MethodGet, "/v1/users/alice/conversations", nil); code != 200 {
		t.Fatalf("an API call during the attack: %d %v", code, out)
	}
	wg.Wait()
}

// TestSecurityConnectionFlood: hundreds of connections that never send a
// request, and hundreds that upgrade and never authenticate, each last at
// most the auth timeout (the upgraded ones closed with 4002), and the
// server keeps serving others meanwhile; afterwards it holds none of them.
// (Flooding with frames is bounded per connection by --conn-rate and
// --conn-burst: TestGatewayRefusals.)
func TestSecurityConnectionFlood(t *testing.T) {
	const timeout = time.Second
	g := newGateway(t, connector.GatewayConfig{AuthTimeout: timeout})
	const silent, unauthed = 150, 150
	before, procOK := serverSockets(g.addr, 0)
	start := time.Now()
	var wg sync.WaitGroup
	var held, closedNoAuth atomic.Int64
	errs := make(chan error, silent+unauthed)
	for range silent {
		wg.Go(func() {
			c, err := net.Dial("tcp", g.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			held.Add(1)
			_ = c.SetReadDeadline(time.Now().Add(10 * timeout))
			if _, err := io.Copy(io.Discard, c); err != nil {
				errs <- fmt.Errorf("a silent connection: %w", err)
			}
		})
	}
	for range unauthed {
		wg.Go(func() {
			d := websocket.Dialer{HandshakeTimeout: 10 * timeout}
			conn, _, err := d.Dial("ws://"+g.addr+"/v1/ws", nil)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			held.Add(1)
			_ = conn.SetReadDeadline(time.Now().Add(10 * timeout))
			_, _, err = conn.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code == connector.CloseNoAuth {
				closedNoAuth.Add(1)
				return
			}
			errs <- fmt.Errorf("an unauthenticated connection: %v", err)
		})
	}
	// While they are open, a client connects and talks.
	eventually(t, "the flood to connect", func() bool { return held.Load() >= (silent+unauthed)*9/10 })
	alice := g.login(t, "alice", "phone")
	if r := alice.call(map[string]any{"op": "sync", "id": "s"}); r["op"] != "sync_ok" {
		t.Fatalf("during the flood: %v", r)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := time.Since(start); d > 8*timeout {
		t.Errorf("the flood was held for %v", d)
	}
	if closedNoAuth.Load() != unauthed {
		t.Errorf("%d of %d unauthenticated connections closed with %d", closedNoAuth.Load(), unauthed, connector.CloseNoAuth)
	}
	if procOK {
		eventually(t, "the server to hold only alice's connection", func() bool {
			n, _ := serverSockets(g.addr, 0)
			return n <= before+1
		})
	}
	if r := alice.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
		t.Fatalf("after the flood: %v", r)
	}
}

// TestSecurityConnectionsPerUser: 10,000 connection attempts for one user
// on one node: the first MaxConnsPerUser (16 by default) get auth_ok, every
// other one is closed with 4004, the server holds no more connections than
// about the attempts in flight (refused ones do not pile up), and other
// users connect as usual. When one of the user's connections goes, another
// may take its place.
func TestSecurityConnectionsPerUser(t *testing.T) {
	// Each attempt in flight holds two descriptors here (both ends), so
	// 64 at once need about 300 with the rest of the test (Go raises the
	// soft limit on open files to the hard one at start).
	const attempts, perUser, parallel = 10_000, 16, 64
	g := newGateway(t, connector.GatewayConfig{})
	tok := token(t, "carol")
	var kept []*client
	for i := range perUser {
		kept = append(kept, g.login(t, "carol", fmt.Sprint("d", i)))
	}
	before, procOK := serverSockets(g.addr, 0)

	// Watch the gateway's connection count while the attempts run. (The
	// kernel's socket list is no use for a peak here: with the machine's
	// TIME_WAIT sockets it has about 100,000 lines, and one read of it
	// takes 0.3–1.6 s, the whole run, counting sockets of different
	// moments together.)
	stopWatch := make(chan struct{})
	watched := make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if n := g.g.Connections(); n > peak {
				peak = n
			}
			select {
			case <-stopWatch:
				watched <- peak
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	var next atomic.Int64
	var refused atomic.Int64
	errs := make(chan error, parallel)
	var wg sync.WaitGroup
	auth, _ := json.Marshal(map[string]any{"op": "auth", "id": "a", "token": tok, "device": "flood"})
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	for range parallel {
		wg.Go(func() {
			for next.Add(1) <= attempts-perUser {
				conn, _, err := d.Dial("ws://"+g.addr+"/v1/ws", nil)
				if err != nil {
					errs <- err
					return
				}
				_ = conn.UnderlyingConn().SetDeadline(time.Now().Add(20 * time.Second))
				err = conn.WriteMessage(websocket.TextMessage, auth)
				if err == nil {
					_, _, err = conn.ReadMessage()
				}
				conn.Close()
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != connector.CloseTooMany {
					errs <- fmt.Errorf("an attempt past the limit: %v, want close %d", err, connector.CloseTooMany)
					return
				}
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	close(stopWatch)
	peak := <-watched
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d attempts refused in %v, %d at once; the gateway held at most %d connections (%d kept)",
		refused.Load(), time.Since(start).Round(time.Millisecond), parallel, peak, perUser)
	if refused.Load() != attempts-perUser || g.g.Closes(connector.CloseTooMany) != attempts-perUser {
		t.Fatalf("%d refused, the gateway counts %d closes with %d; want %d", refused.Load(), g.g.Closes(connector.CloseTooMany), connector.CloseTooMany, attempts-perUser)
	}
	// A refused connection is held until its client answers the close
	// frame: about one per client at a time, a few more while a client's
	// close crosses its next dial. Piling up, they would be thousands.
	if peak > perUser+parallel+8 {
		t.Errorf("the gateway held %d connections; at most %d kept + %d in flight expected", peak, perUser, parallel)
	}
	eventually(t, "the gateway to hold only the kept connections", func() bool { return g.g.Connections() == perUser })
	// And their sockets are gone: the kernel's list, once the churn is over.
	if procOK {
		eventually(t, "the server to hold only the kept connections", func() bool {
			n, _ := serverSockets(g.addr, 0)
			return n <= before
		})
	}
	// The kept connections still work; other users connect.
	for _, c := range kept {
		if r := c.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
			t.Fatalf("a kept connection: %v", r)
		}
	}
	if r := g.login(t, "dave", "phone").call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
		t.Fatalf("another user: %v", r)
	}
	// The count is exact: one leaves, one more may come.
	kept[0].conn.Close()
	eventually(t, "a slot to free up", func() bool {
		op, _ := g.authAnswer(t, tok, "new")
		return op == "auth_ok"
	})
}

// TestSecurityDeepAndHugeJSON: deeply nested or huge JSON gets a clear
// error and costs nothing lasting: on the WebSocket, a frame over 64 KiB is
// closed with 1009, nesting beyond what the decoder takes is bad_request
// (the connection stays), and a message body nested deeper than 64 levels
// is bad_request (a body deep enough to break readers' decoders would make
// the conversation's history unreadable for them); on the HTTP API the same
// is 413 or 400. Other clients are served throughout.
func TestSecurityDeepAndHugeJSON(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey, RatePerSecond: 1000, RateBurst: 1000})
	alice := g.login(t, "alice", "phone")
	conv := alice.call(map[string]any{"op": "create", "id": "c", "kind": "direct", "members": []string{"bob"}})["conv"].(string)
	nested := func(depth int) string { return strings.Repeat("[", depth) + strings.Repeat("]", depth) }
	sendRaw := func(c *client, frame string) {
		t.Helper()
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	sendBody := func(id, body string) map[string]any {
		t.Helper()
		sendRaw(alice, `{"op":"send","id":"`+id+`","conv":"`+conv+`","cmid":"`+id+`","body":`+body+`}`)
		for {
			if r := alice.read(); r["id"] == id {
				return r
			}
		}
	}

	// 70,000 '[' is over the frame limit: 1009, and nobody else notices.
	// The server may close before the whole frame is written, so the
	// write itself may fail (broken pipe); the close code is what counts.
	victim := g.login(t, "mallory", "1")
	_ = victim.conn.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("[", 70_000)))
	if code := closeCode(t, victim.conn); code != connector.CloseTooLarge {
		t.Fatalf("70,000 '[': close %d, want %d", code, connector.CloseTooLarge)
	}
	// Within the frame limit, nesting past the decoder's 10,000 levels is a
	// bad frame; so is a frame that never closes its brackets.
	deep := g.login(t, "mallory", "2")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const deepFrames = 20
	for i := range deepFrames {
		frame, msg := `{"op":"ping","id":"x","pad":`+nested(30_000)+`}`, "the frame nests deeper than 10000 levels"
		if i%2 == 1 {
			frame, msg = strings.Repeat("[", 60_000), "the frame must be a JSON object"
		}
		sendRaw(deep, frame)
		if r := deep.read(); r["op"] != "error" || r["code"] != "bad_request" || r["message"] != msg {
			t.Fatalf("a frame nested past the decoder's limit: %v, want %q", r, msg)
		}
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d deep frames of about 60 KB: %d KiB allocated in all (the whole process)", deepFrames, allocated>>10)
	if allocated > deepFrames*4<<20 {
		t.Errorf("%d deep frames cost %d MiB of allocations", deepFrames, allocated>>20)
	}
	if r := deep.call(map[string]any{"op": "ping", "id": "still"}); r["op"] != "pong" {
		t.Fatalf("after deep frames: %v", r)
	}
	// Message bodies: 64 levels are fine, 65 and more are refused, up to
	// depths the server's own decoder takes but readers' may not.
	if r := sendBody("d64", nested(schema.MaxBodyDepth)); r["op"] != "ack" {
		t.Fatalf("a body of %d levels: %v", schema.MaxBodyDepth, r)
	}
	for _, depth := range []int{schema.MaxBodyDepth + 1, 1000, 9_998} {
		if r := sendBody(fmt.Sprint("d", depth), nested(depth)); r["op"] != "error" || r["code"] != "bad_request" {
			t.Errorf("a body of %d levels: %v, want bad_request", depth, r)
		}
		id := fmt.Sprint("e", depth)
		sendRaw(alice, `{"op":"edit","id":"`+id+`","conv":"`+conv+`","cmid":"`+id+`","target":2,"body":`+nested(depth)+`}`)
		for {
			r := alice.read()
			if r["id"] != id {
				continue
			}
			if r["op"] != "error" || r["code"] != "bad_request" {
				t.Errorf("an edit with a body of %d levels: %v, want bad_request", depth, r)
			}
			break
		}
	}
	// Deep strings are not nesting.
	if r := sendBody("s", `"`+strings.Repeat("[", 30_000)+`"`); r["op"] != "ack" {
		t.Fatalf("a string of brackets: %v", r)
	}
	// The history of the conversation stays readable: this client's
	// decoder (Go's, 10,000 levels) reads every history_ok frame.
	eventually(t, "the writer to store the messages", func() bool {
		r := alice.call(map[string]any{"op": "history", "id": "h", "conv": conv, "after": 0})
		evs, _ := r["events"].([]any)
		return len(evs) == 3
	})

	// The HTTP API.
	a := newAPI(t, g.addr)
	a.want(400, "bad_request", http.MethodPost, "/v1/tokens", strings.Repeat("[", 100_000))
	a.want(400, "bad_request", http.MethodPost, "/v1/tokens", `{"user":"alice","ttl_s":`+nested(20_000)+`}`)
	msgs := "/v1/conversations/" + conv + "/messages"
	a.want(200, "", http.MethodPost, msgs, `{"from":"alice","cmid":"h64","body":`+nested(schema.MaxBodyDepth)+`}`)
	a.want(400, "bad_request", http.MethodPost, msgs, `{"from":"alice","cmid":"h65","body":`+nested(schema.MaxBodyDepth+1)+`}`)
	a.want(400, "bad_request", http.MethodPost, msgs, `{"from":"alice","cmid":"h9998","body":`+nested(9_998)+`}`)
	a.want(400, "bad_request", http.MethodPost, msgs, `{"from":"alice","cmid":"h30000","body":`+nested(30_000)+`}`)
	// (Bodies over the limit get 413 too_large: TestHTTPAPITooLarge.)
	// A huge but well-formed member list gets an answer, not a stall.
	var members strings.Builder
	members.WriteString(`{"kind":"group","as":"alice","members":[`)
	for i := 0; members.Len() < 1000<<10; i++ {
		if i > 0 {
			members.WriteByte(',')
		}
		fmt.Fprintf(&members, `"user-%07d"`, i)
	}
	members.WriteString(`]}`)
	// Raw, since the server answers before it has read the whole body and a
	// client still writing it may see the connection reset first.
	status, out := rawRequest(t, g.addr, fmt.Sprintf("POST /v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		apiKey, members.Len()), []byte(members.String()))
	t.Logf("a create with %d KiB of members: %d %v", members.Len()>>10, status, out)
	if status != http.StatusRequestEntityTooLarge || out["code"] != "too_large" {
		t.Errorf("a create with %d KiB of members: %d %v, want 413 too_large", members.Len()>>10, status, out)
	}
	if r := alice.call(map[string]any{"op": "ping", "id": "end"}); r["op"] != "pong" {
		t.Fatalf("after the HTTP API cases: %v", r)
	}
}

// TestSecurityPushEndpoint: the internal push endpoint is served only on
// the push listener, and there only with the secret; the public listener
// answers its path 404 and delivers nothing, and the push listener serves
// nothing of the public one.
func TestSecurityPushEndpoint(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey, PushListen: "127.0.0.1:0", PushSecret: pushSecret})
	push := g.g.PushAddr().String()
	alice := g.login(t, "alice", "phone")
	batch, err := proto.Marshal(&parleyv1.PushBatch{Pushes: []*parleyv1.Push{{Users: []string{"alice"}, Event: &parleyv1.Event{
		Conv: "c1", Seq: 1, Type: parleyv1.EventType_EVENT_TYPE_MESSAGE, MsgId: "m", From: "mallory", Kind: "text", Body: []byte(`"forged"`), Ts: 1,
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	post := func(addr, method, path string, header http.Header, body []byte) (int, map[string]any) {
		t.Helper()
		head := method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
		for k, vs := range header {
			for _, v := range vs {
				head += k + ": " + v + "\r\n"
			}
		}
		return rawRequest(t, addr, head+"\r\n", body)
	}
	withSecret := http.Header{connector.PushSecretHeader: {string(pushSecret)}, "Authorization": {"Bearer " + string(apiKey)}}

	// The public listener: 404, with the secret, the API key, any method.
	for _, m := range []string{http.MethodPost, http.MethodGet, http.MethodPut} {
		for _, p := range []string{connector.PushPath, connector.PushPath + "/", "/internal/", "//internal/push", "/v1/../internal/push"} {
			if status, out := post(g.addr, m, p, withSecret, batch); status != http.StatusNotFound || out["code"] != "not_found" {
				t.Errorf("%s %s on the public listener: %d %v, want 404", m, p, status, out)
			}
		}
	}
	// Nothing was delivered: alice's next frame answers her ping.
	if r := alice.call(map[string]any{"op": "ping", "id": "p"}); r["op"] != "pong" {
		t.Fatalf("alice got %v", r)
	}

	// The push listener: the secret or 401.
	for name, h := range map[string]http.Header{
		"no secret":        {},
		"empty secret":     {connector.PushSecretHeader: {""}},
		"wrong secret":     {connector.PushSecretHeader: {strings.Repeat("x", len(pushSecret))}},
		"secret prefix":    {connector.PushSecretHeader: {string(pushSecret[:len(pushSecret)-1])}},
		"secret plus more": {connector.PushSecretHeader: {string(pushSecret) + "x"}},
		"the API key":      {connector.PushSecretHeader: {string(apiKey)}, "Authorization": {"Bearer " + string(apiKey)}},
		"as a bearer":      {"Authorization": {"Bearer " + string(pushSecret)}},
	} {
		if status, out := post(push, http.MethodPost, connector.PushPath, h, batch); status != http.StatusUnauthorized || out["code"] != "unauthorized" {
			t.Errorf("push with %s: %d %v, want 401", name, status, out)
		}
	}
	if status, _ := post(push, http.MethodGet, connector.PushPath, withSecret, nil); status != http.StatusMethodNotAllowed {
		t.Errorf("GET on the push endpoint: %d, want 405", status)
	}
	if status, _ := post(push, http.MethodPost, connector.PushPath, withSecret, []byte("not a batch \xff\xff")); status != http.StatusBadRequest {
		t.Errorf("a push body that is not a PushBatch: %d, want 400", status)
	}
	// The public routes are not on the push listener.
	for _, p := range []string{"/v1/ws", "/v1/tokens", "/v1/users/alice/conversations", "/healthz", "/readyz", "/"} {
		if status, _ := post(push, http.MethodGet, p, withSecret, nil); status != http.StatusNotFound {
			t.Errorf("GET %s on the push listener: %d, want 404", p, status)
		}
	}
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+push+"/v1/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("a WebSocket upgrade on the push listener: %v %v, want 404", resp, err)
	}
	// Nothing was delivered still; with the secret, it is.
	if r := alice.call(map[string]any{"op": "ping", "id": "q"}); r["op"] != "pong" {
		t.Fatalf("alice got %v", r)
	}
	if status, out := post(push, http.MethodPost, connector.PushPath, withSecret, batch); status != 200 || out["delivered"] != 1.0 {
		t.Fatalf("a push with the secret: %d %v", status, out)
	}
	if r := alice.read(); r["op"] != "event" || r["body"] != "forged" {
		t.Fatalf("the push: %v", r)
	}
}
