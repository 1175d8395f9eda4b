package connector

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// clientFrame is a frame as a client sends it: masked unless unmasked.
func clientFrame(t *testing.T, op ws.OpCode, fin bool, payload []byte, unmasked bool) []byte {
	t.Helper()
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	if !unmasked {
		f = ws.MaskFrameWith(f, [4]byte{0x12, 0x34, 0x56, 0x78})
	}
	b, err := ws.CompileFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tcpPair is a loopback TCP connection: the server's end read by a
// wsReader, the client's end to write frames on.
func tcpPair(t *testing.T, limit int64) (r *wsReader, client net.Conn, pings *[]string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	pings = new([]string)
	r = newWSReader(server, limit, func(p []byte) { *pings = append(*pings, string(p)) })
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	return r, client, pings
}

func write(t *testing.T, c net.Conn, frames ...[]byte) {
	t.Helper()
	if _, err := c.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestWSReaderMessages(t *testing.T) {
	r, c, pings := tcpPair(t, 64)
	// One frame; then a message in three fragments with a ping between,
	// sent in one write with the next message behind it.
	write(t, c, clientFrame(t, ws.OpText, true, []byte("hello"), false))
	if msg, err := r.next(); err != nil || string(msg) != "hello" {
		t.Fatalf("one frame: %q %v", msg, err)
	}
	if r.buffered() {
		t.Fatal("nothing should be buffered after the only frame")
	}
	r.release()
	if r.buf != nil {
		t.Fatal("release kept the buffer")
	}
	write(t, c,
		clientFrame(t, ws.OpText, false, []byte("frag"), false),
		clientFrame(t, ws.OpPing, true, []byte("p1"), false),
		clientFrame(t, ws.OpContinuation, false, []byte("men"), false),
		clientFrame(t, ws.OpPong, true, []byte("ignored"), false),
		clientFrame(t, ws.OpContinuation, true, []byte("ted"), false),
		clientFrame(t, ws.OpBinary, true, []byte{0, 1, 2}, false))
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	if msg, err := r.next(); err != nil || string(msg) != "fragmented" {
		t.Fatalf("fragments: %q %v", msg, err)
	}
	if strings.Join(*pings, ",") != "p1" {
		t.Fatalf("pings: %v", *pings)
	}
	// The last message may still be in the socket rather than the buffer;
	// either way the next read takes it.
	if msg, err := r.next(); err != nil || !bytes.Equal(msg, []byte{0, 1, 2}) {
		t.Fatalf("binary: %v %v", msg, err)
	}
	// The client's close frame ends the stream.
	write(t, c, clientFrame(t, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"), false))
	if _, err := r.next(); !errors.Is(err, errClientClosed) {
		t.Fatalf("close: %v", err)
	}
}

// TestWSReaderLargeMessages: messages of many buffers' worth, whole or in
// fragments, arrive intact (the reader grows them as their bytes come).
func TestWSReaderLargeMessages(t *testing.T) {
	r, c, _ := tcpPair(t, 100_000)
	big := make([]byte, 50_000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	frames := bytes.Join([][]byte{
		clientFrame(t, ws.OpText, true, big, false),
		clientFrame(t, ws.OpText, false, big[:30_000], false),
		clientFrame(t, ws.OpContinuation, true, big[30_000:], false),
	}, nil)
	written := make(chan error, 1)
	go func() { _, err := c.Write(frames); written <- err }()
	for i := range 2 {
		if msg, err := r.next(); err != nil || !bytes.Equal(msg, big) {
			t.Fatalf("message %d: %d bytes, %v", i, len(msg), err)
		}
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

// TestWSReaderWait: wait returns once bytes from the socket are buffered,
// keeps the read deadline, holds no buffer while there is nothing to read,
// and reports the end of the stream.
func TestWSReaderWait(t *testing.T) {
	r, c, _ := tcpPair(t, 64)
	_ = r.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := r.wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait with nothing sent: %v, want the deadline", err)
	}
	if r.buf != nil {
		t.Fatal("a buffer held after waiting for nothing")
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	done := make(chan error, 1)
	go func() { done <- r.wait() }()
	write(t, c, clientFrame(t, ws.OpText, true, []byte("x"), false))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !r.buffered() {
		t.Fatal("wait returned with nothing buffered")
	}
	if err := r.wait(); err != nil { // at once: bytes are buffered
		t.Fatal(err)
	}
	if msg, err := r.next(); err != nil || string(msg) != "x" {
		t.Fatalf("after wait: %q %v", msg, err)
	}
	r.release()
	c.Close()
	if err := r.wait(); !errors.Is(err, io.EOF) {
		t.Fatalf("wait on a closed connection: %v, want EOF", err)
	}
	r.drop()
	if _, err := r.next(); err == nil {
		t.Fatal("read from a closed connection succeeded")
	}
}

// TestWSReaderTooLarge: a message over the limit, whole or in fragments,
// is errTooLarge; its frame's rest is skipped so the stream goes on.
func TestWSReaderTooLarge(t *testing.T) {
	r, c, _ := tcpPair(t, 16)
	write(t, c,
		clientFrame(t, ws.OpText, true, bytes.Repeat([]byte("a"), 1000), false),
		clientFrame(t, ws.OpText, true, []byte("after"), false))
	if _, err := r.next(); !errors.Is(err, errTooLarge) {
		t.Fatalf("1000 bytes over a 16-byte limit: %v", err)
	}
	if msg, err := r.next(); err != nil || string(msg) != "after" {
		t.Fatalf("after the skipped frame: %q %v", msg, err)
	}
	write(t, c,
		clientFrame(t, ws.OpText, false, bytes.Repeat([]byte("b"), 10), false),
		clientFrame(t, ws.OpContinuation, true, bytes.Repeat([]byte("b"), 10), false))
	if _, err := r.next(); !errors.Is(err, errTooLarge) {
		t.Fatalf("20 bytes in two fragments over a 16-byte limit: %v", err)
	}
}

// TestWSReaderProtocolErrors: each frame that breaks RFC 6455 is a
// protocol error.
func TestWSReaderProtocolErrors(t *testing.T) {
	rsv := func() []byte {
		f := ws.MaskFrameWith(ws.NewTextFrame([]byte("x")), [4]byte{1, 2, 3, 4})
		f.Header.Rsv = ws.Rsv(true, false, false)
		b, _ := ws.CompileFrame(f)
		return b
	}
	for name, frames := range map[string][][]byte{
		"unmasked":                 {clientFrame(t, ws.OpText, true, []byte("x"), true)},
		"rsv bit":                  {rsv()},
		"reserved opcode":          {clientFrame(t, ws.OpCode(3), true, []byte("x"), false)},
		"continuation first":       {clientFrame(t, ws.OpContinuation, true, []byte("x"), false)},
		"text inside a fragmented": {clientFrame(t, ws.OpText, false, []byte("x"), false), clientFrame(t, ws.OpText, true, []byte("y"), false)},
		"fragmented ping":          {clientFrame(t, ws.OpPing, false, []byte("x"), false)},
		"ping over 125 bytes":      {clientFrame(t, ws.OpPing, true, bytes.Repeat([]byte("x"), 126), false)},
		"close of one byte":        {clientFrame(t, ws.OpClose, true, []byte{3}, false)},
		"close code 1005":          {clientFrame(t, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNoStatusRcvd, ""), false)},
		"close code 999":           {clientFrame(t, ws.OpClose, true, ws.NewCloseFrameBody(999, ""), false)},
		"close reason not UTF-8":   {clientFrame(t, ws.OpClose, true, append(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), 0xff, 0xfe), false)},
		"64-bit length's top bit":  {{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}},
	} {
		r, c, _ := tcpPair(t, 1<<10)
		write(t, c, frames...)
		_, err := r.next()
		var pe *protocolError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}

func TestCloseFrame(t *testing.T) {
	f, err := ws.ReadFrame(bytes.NewReader(closeFrame(4003, "outbound queue full")))
	if err != nil || f.Header.OpCode != ws.OpClose || !f.Header.Fin || f.Header.Masked {
		t.Fatalf("%+v %v", f.Header, err)
	}
	if code, reason := ws.ParseCloseFrameData(f.Payload); code != 4003 || reason != "outbound queue full" {
		t.Fatalf("%d %q", code, reason)
	}
	long := closeFrame(1000, strings.Repeat("x", 200))
	if f, _ := ws.ReadFrame(bytes.NewReader(long)); f.Header.Length != 125 {
		t.Fatalf("a long reason gives a %d-byte payload, want 125", f.Header.Length)
	}
}
