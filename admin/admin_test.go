package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestReadyz(t *testing.T) {
	storeErr := errors.New("no hosts available")
	var down atomic.Bool
	srv := httptest.NewServer(Handler(map[string]Check{
		"log": func(context.Context) error { return nil },
		"store": func(context.Context) error {
			if down.Load() {
				return storeErr
			}
			return nil
		},
	}))
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 200 || body["ok"] != true {
		t.Fatalf("/readyz %d %v", code, body)
	}
	down.Store(true)
	code, body := get("/readyz")
	if code != 503 || body["code"] != "unavailable" || body["checks"].(map[string]any)["store"] != storeErr.Error() {
		t.Fatalf("/readyz with the store down: %d %v", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz with the store down: %d", code)
	}
}
