package client

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// wsSink is a WebSocket server on loopback that hands every message it
// reads to msgs, and the error that ended its reading to end.
type wsSink struct {
	url  string
	msgs chan []byte
	end  chan error
}

func newWSSink(t *testing.T) *wsSink {
	s := &wsSink{msgs: make(chan []byte, 1000), end: make(chan error, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{ReadBufferSize: 4096}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetReadLimit(1 << 20)
		for {
			typ, data, err := ws.ReadMessage()
			if err != nil {
				s.end <- err
				return
			}
			if typ != websocket.TextMessage {
				s.end <- errors.New("not a text message")
				return
			}
			s.msgs <- data
		}
	}))
	t.Cleanup(srv.Close)
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	return s
}

// gatedConn is a network connection whose writes can be held, counted
// and cut short.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	hold    chan struct{} // if not nil, the next Write waits for it to close
	holding chan struct{} // closed when a Write starts waiting on hold
	cut     int           // if > 0, the next Write writes this many bytes, then fails
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.writes++
	hold, holding, cut := g.hold, g.holding, g.cut
	g.hold, g.cut = nil, 0
	g.mu.Unlock()
	if hold != nil {
		close(holding)
		<-hold
	}
	if cut > 0 {
		n, _ := g.Conn.Write(p[:cut])
		return n, errors.New("injected write failure")
	}
	return g.Conn.Write(p)
}

// holdNext makes the next Write wait until hold is closed; holding is
// closed when it starts waiting.
func (g *gatedConn) holdNext() (hold, holding chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold, g.holding = make(chan struct{}), make(chan struct{})
	return g.hold, g.holding
}

func (g *gatedConn) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

// dialSink connects a bare conn (no authentication, no reader) to s,
// through a gatedConn.
func dialSink(t *testing.T, s *wsSink) (*conn, *gatedConn) {
	var g *gatedConn
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			g = &gatedConn{Conn: nc}
		}
		return g, err
	}}
	ws, _, err := d.Dial(s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	cn := &conn{c: &Client{cfg: Config{RequestTimeout: 5 * time.Second}}, ws: ws, done: make(chan struct{})}
	t.Cleanup(cn.close)
	return cn, g
}

func receive(t *testing.T, s *wsSink) []byte {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.end:
		select {
		case m := <-s.msgs: // read before the end
			s.end <- err
			return m
		default:
		}
		t.Fatalf("the server stopped reading: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

// queued waits until the batch being gathered holds n frames of size
// bytes each.
func queued(t *testing.T, cn *conn, n, size int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cn.wmu.Lock()
		got := 0
		if cn.next != nil {
			got = len(cn.next.buf) / size
		}
		cn.wmu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames queued, want %d", got, n)
		}
		runtime.Gosched()
	}
}

// The frames the client encodes itself are read back whole by the
// WebSocket library's server side, at every length encoding.
func TestClientFrames(t *testing.T) {
	s := newWSSink(t)
	cn, _ := dialSink(t, s)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{0, 1, 7, 8, 9, 17, 125, 126, 127, 1000, 65535, 65536, 100_003} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte('a' + rng.IntN(26))
		}
		if err := cn.write(p); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got := receive(t, s); !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: the server read %d bytes, not the frame sent", n, len(got))
		}
	}
}

func TestMask(t *testing.T) {
	for n := range 40 {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		key := uint32(0xa1b2c3d4)
		got := slices.Clone(p)
		mask(got, key)
		for i := range p {
			if want := p[i] ^ byte(key>>(8*(i%4))); got[i] != want {
				t.Fatalf("length %d: byte %d is %#x, want %#x", n, i, got[i], want)
			}
		}
	}
}

// Frames queued while a batch is being written go out together in the
// next Write.
func TestWritesShareBatches(t *testing.T) {
	s := newWSSink(t)
	cn, g := dialSink(t, s)
	hold, holding := g.holdNext()
	before := g.count()

	frame := func(i int) []byte { return []byte(strings.Repeat(string(rune('A'+i%26)), 20)) }
	const n = 50
	errs := make(chan error, n)
	go func() { errs <- cn.write(frame(0)) }()
	<-holding // the first frame's write is held
	for i := 1; i < n; i++ {
		go func() { errs <- cn.write(frame(i)) }()
	}
	queued(t, cn, n-1, 2+4+20) // header, mask key, payload
	close(hold)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if w := g.count() - before; w != 2 {
		t.Errorf("%d frames took %d writes, want 2", n, w)
	}
	var got []string
	for range n {
		got = append(got, string(receive(t, s)))
	}
	var want []string
	for i := range n {
		want = append(want, string(frame(i)))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the server read %q, want %q", got, want)
	}
}

// When a batch's write fails part way, the frames written whole count as
// sent, the rest as not sent (safe to retry anywhere), and the connection
// is closed.
func TestWriteFailsPartWay(t *testing.T) {
	s := newWSSink(t)
	cn, g := dialSink(t, s)
	hold, holding := g.holdNext()

	const size = 2 + 4 + 10
	first := make(chan error, 1)
	go func() { first <- cn.write([]byte("first-0000")) }()
	<-holding
	errs := make([]chan error, 3)
	for i := range errs {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- cn.write([]byte("frame-" + strings.Repeat(string(rune('0'+i)), 4))) }()
		queued(t, cn, i+1, size) // in this order in the batch
	}
	g.mu.Lock()
	g.cut = 2*size + 3 // two frames whole, the third begun
	g.mu.Unlock()
	close(hold)

	if err := <-first; err != nil {
		t.Fatalf("first frame: %v", err)
	}
	for i, want := range []bool{true, true, false} {
		err := <-errs[i]
		if sent := err == nil; sent != want {
			t.Errorf("frame %d: err %v, want sent %v", i, err, want)
		}
		if err != nil && !errors.Is(err, errNotSent) {
			t.Errorf("frame %d: %v does not say the frame was not sent", i, err)
		}
	}
	for _, want := range []string{"first-0000", "frame-0000", "frame-1111"} {
		if got := string(receive(t, s)); got != want {
			t.Errorf("the server read %q, want %q", got, want)
		}
	}
	select {
	case <-cn.done:
	default:
		t.Error("the connection is still open after a failed write")
	}
	if err := cn.write([]byte("late")); !errors.Is(err, errNotSent) {
		t.Errorf("a write after the failure: %v, want errNotSent", err)
	}
}

// shutdown sends a close frame after what was queued, and nothing after it.
func TestShutdownSendsClose(t *testing.T) {
	s := newWSSink(t)
	cn, _ := dialSink(t, s)
	if err := cn.write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	cn.shutdown(websocket.CloseNormalClosure, "bye")
	if got := string(receive(t, s)); got != "last words" {
		t.Fatalf("the server read %q", got)
	}
	var ce *websocket.CloseError
	select {
	case err := <-s.end:
		if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "bye" {
			t.Fatalf("the server's read ended with %v, want a close frame 1000 bye", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no close frame")
	}
	if err := cn.write([]byte("after")); !errors.Is(err, errNotSent) {
		t.Errorf("a write after shutdown: %v, want errNotSent", err)
	}
}
