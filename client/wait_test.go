package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// mute is a server on loopback that authenticates every connection and
// then answers nothing: it reports each ping it reads on pings, and with
// drop set it closes the connection instead.
type mute struct {
	url   string
	pings chan struct{}
}

func newMute(t *testing.T, drop bool) *mute {
	m := &mute{pings: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f struct{ Op, ID string }
			if json.Unmarshal(data, &f) != nil {
				return
			}
			switch f.Op {
			case "auth":
				ok := `{"op":"auth_ok","id":"auth","user":"u1","device":"d1","node":"n1"}`
				if ws.WriteMessage(websocket.TextMessage, []byte(ok)) != nil {
					return
				}
			case "ping":
				m.pings <- struct{}{}
				if drop {
					return
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	m.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	return m
}

func (m *mute) dial(t *testing.T, timeout time.Duration) *Client {
	c, err := Dial(context.Background(), Config{
		URLs: []string{m.url}, Device: "d1", RequestTimeout: timeout,
		Token:  func(context.Context) (string, error) { return "token", nil },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pinged waits for the server to read a ping.
func (m *mute) pinged(t *testing.T) {
	t.Helper()
	select {
	case <-m.pings:
	case <-time.After(10 * time.Second):
		t.Fatal("the server read no ping")
	}
}

// A request without a reply fails with ErrNoReply once the request
// timeout has passed (found by the connection's sweep, not a timer of its
// own), and so does the next one, after the sweep stopped with nothing
// left to wait for.
func TestRequestWithoutReply(t *testing.T) {
	const timeout = 300 * time.Millisecond
	c := newMute(t, false).dial(t, timeout)
	for i := range 2 {
		start := time.Now()
		err := c.Ping(context.Background())
		if !errors.Is(err, ErrNoReply) {
			t.Fatalf("Ping %d: %v, want ErrNoReply", i, err)
		}
		if took := time.Since(start); took < timeout {
			t.Errorf("Ping %d gave up after %v, before the request timeout %v", i, took, timeout)
		}
	}
}

// A connection that ends before the reply fails the request with
// ErrConnectionLost.
func TestRequestConnectionLost(t *testing.T) {
	m := newMute(t, true)
	c := m.dial(t, 10*time.Second)
	if err := c.Ping(context.Background()); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("Ping: %v, want ErrConnectionLost", err)
	}
}

// The caller's context and the client's Close end a wait for a reply.
func TestRequestWaitEnds(t *testing.T) {
	m := newMute(t, false)
	c := m.dial(t, time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- c.Ping(ctx) }()
	m.pinged(t)
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with its context cancelled: %v, want context.Canceled", err)
	}

	go func() { errs <- c.Ping(context.Background()) }()
	m.pinged(t)
	c.Close()
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Errorf("Ping when the client closed: %v, want ErrClosed", err)
	}
}
