package connector_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/connector"
)

// httpCall sends a request to a gateway with extra headers (and Host, if
// host is set) and returns the answer's status, headers and body.
func httpCall(t *testing.T, method, url, host string, body string, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

// wantJSON checks a JSON answer's status and, for an error, its code and
// message, and returns the decoded object.
func wantJSON(t *testing.T, what string, status int, h http.Header, raw []byte, wantStatus int, wantCode string) map[string]any {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: content type %q (%d %s), want application/json", what, ct, status, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %q is not a JSON object: %v", what, raw, err)
	}
	if status != wantStatus || (wantCode != "" && out["code"] != wantCode) {
		t.Fatalf("%s: %d %v, want %d %s", what, status, out, wantStatus, wantCode)
	}
	if wantCode != "" && out["message"] == "" {
		t.Fatalf("%s: an error without a message: %v", what, out)
	}
	return out
}

// TestDevLogin: with a dev sign-in code, /dev/token mints a token for any
// user without the API key to whoever presents the code, the token
// authenticates a WebSocket session, bad input gets the API's JSON errors,
// and requests without the code, from another site's page or addressed to
// a DNS name are refused.
func TestDevLogin(t *testing.T) {
	const code = "the-sign-in-code"
	g := newGateway(t, connector.GatewayConfig{DevLoginCode: code, APIKey: apiKey})
	url := "http://" + g.addr + "/dev/token"
	call := func(method, body string, header map[string]string) (int, http.Header, []byte) {
		return httpCall(t, method, url, "", body, header)
	}

	st, h, raw := call(http.MethodGet, "", nil)
	if out := wantJSON(t, "GET", st, h, raw, 200, ""); out["dev_login"] != true {
		t.Fatalf("GET answered %v, want dev_login true", out)
	}
	if st, _, raw := call(http.MethodHead, "", nil); st != 200 || len(raw) != 0 {
		t.Fatalf("HEAD answered %d %q", st, raw)
	}

	st, h, raw = call(http.MethodPost, `{"user":"alice","code":"`+code+`"}`, map[string]string{"Content-Type": "application/json"})
	out := wantJSON(t, "POST alice", st, h, raw, 200, "")
	tok, _ := out["token"].(string)
	if user, err := auth.Verify(secret, tok, time.Now()); err != nil || user != "alice" || out["user"] != "alice" {
		t.Fatalf("POST alice answered %v: token for %q, %v", out, user, err)
	}
	if cc := h.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("a token answer has Cache-Control %q, want no-store", cc)
	}
	// The token works on the WebSocket, like any other.
	conn, _, err := g.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn}
	if r := c.call(map[string]any{"op": "auth", "id": "a", "token": tok, "device": "web-1"}); r["op"] != "auth_ok" || r["user"] != "alice" {
		t.Fatalf("auth with the dev token answered %v", r)
	}
	// A lifetime, as POST /v1/tokens takes it.
	st, h, raw = call(http.MethodPost, `{"user":"bob.b-1_x","ttl_s":60,"code":"`+code+`"}`, nil)
	wantJSON(t, "POST with ttl_s", st, h, raw, 200, "")
	// No code, a wrong one, a prefix of it: no token.
	for _, body := range []string{`{"user":"alice"}`, `{"user":"alice","code":""}`, `{"user":"alice","code":"the-sign-in-cod"}`,
		`{"user":"alice","code":"the-sign-in-code-and-more"}`, `{"user":"alice","code":7}`} {
		st, h, raw := call(http.MethodPost, body, nil)
		if out := wantJSON(t, "POST "+body, st, h, raw, 403, "forbidden"); out["token"] != nil {
			t.Fatalf("a token without the code: %v", out)
		}
	}

	for _, body := range []string{
		`{"user":"al ice"}`, `{"user":""}`, `{}`, `{"user":"` + strings.Repeat("a", 65) + `"}`, `{"user":"alice","ttl_s":0}`,
		`{"user":7}`, `not json`, `["alice"]`, ``,
	} {
		st, h, raw := call(http.MethodPost, body, nil)
		wantJSON(t, "POST "+body, st, h, raw, 400, "bad_request")
	}
	st, h, raw = call(http.MethodPut, `{"user":"alice"}`, nil)
	wantJSON(t, "PUT", st, h, raw, 405, "bad_request")
	if allow := h.Get("Allow"); allow != "GET, HEAD, POST" {
		t.Fatalf("405 with Allow %q", allow)
	}

	// A browser page of this server may ask; another site's may not.
	for origin, want := range map[string]int{
		"http://" + g.addr:           200,
		"https://" + g.addr:          200,
		"http://evil.example":        403,
		"http://" + g.addr + ".evil": 403,
		"null":                       403,
		"http://localhost:1":         403,
	} {
		st, h, raw := call(http.MethodPost, `{"user":"alice","code":"`+code+`"}`, map[string]string{"Origin": origin})
		code := ""
		if want == 403 {
			code = "forbidden"
		}
		wantJSON(t, "POST from "+origin, st, h, raw, want, code)
	}
	// A request addressed to a DNS name (a rebound one, for all the server
	// knows) gets nothing; localhost and IP addresses do.
	_, port, _ := strings.Cut(g.addr, ":")
	for host, want := range map[string]int{
		"evil.example:" + port:  403,
		"evil.example":          403,
		"localhost:" + port:     200,
		"app.localhost:" + port: 200,
		"127.0.0.1:" + port:     200,
		"[::1]:" + port:         200,
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			st, h, raw := httpCall(t, method, url, host, `{"user":"alice","code":"`+code+`"}`, nil)
			code := ""
			if want == 403 {
				code = "forbidden"
			}
			wantJSON(t, method+" with Host "+host, st, h, raw, want, code)
		}
	}
}

// TestDevLoginOff: without a dev sign-in code (every role but `parley dev`),
// /dev/token is an unknown endpoint, whatever the method, and the API key
// still guards /v1/tokens.
func TestDevLoginOff(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{APIKey: apiKey})
	url := "http://" + g.addr + "/dev/token"
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
		st, h, raw := httpCall(t, method, url, "", `{"user":"alice"}`, nil)
		if out := wantJSON(t, method+" /dev/token", st, h, raw, 404, "not_found"); out["token"] != nil {
			t.Fatalf("a token without dev login: %v", out)
		}
	}
	st, h, raw := httpCall(t, http.MethodPost, "http://"+g.addr+"/v1/tokens", "", `{"user":"alice"}`, nil)
	wantJSON(t, "/v1/tokens without the key", st, h, raw, 401, "unauthorized")
	if bytes.Contains(raw, []byte("token\":")) {
		t.Fatalf("/v1/tokens without the key answered %s", raw)
	}
}
