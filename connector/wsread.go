package connector

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gobwas/ws"
)

// The read side of a client connection, built to cost next to nothing while
// the client is quiet, which most clients are most of the time. A session
// keeps no read buffer between messages and no goroutine with a grown stack:
// a fresh goroutine, at the runtime's minimum stack, waits until the socket
// is readable (wait peeks and takes nothing); the messages are then read
// through a pooled buffer and handled; once nothing is left buffered, the
// buffer goes back to the pool and the next wait to a fresh goroutine.
// Go's poller (epoll on Linux) does the waiting.

// readBufSize is the pooled read buffer's size: a typical burst of frames
// fits; a larger message is read past it.
const readBufSize = 4 << 10

var readBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// readBufsHeld counts the read buffers sessions hold: the sessions reading
// a burst or a partial frame, never a quiet one.
var readBufsHeld atomic.Int64

var (
	// errTooLarge: a message over the limit; its frame's rest is skipped
	// by the next call, so the connection can still be drained.
	errTooLarge = errors.New("message too large")
	// errClientClosed: the client's close frame.
	errClientClosed = errors.New("closed by the client")
)

// protocolError is a frame that breaks RFC 6455; the stream cannot be read
// on after it.
type protocolError struct{ reason string }

func (e *protocolError) Error() string { return "websocket protocol error: " + e.reason }

// wsReader reads a client's messages from the TCP connection. One goroutine
// uses it at a time.
type wsReader struct {
	conn   net.Conn
	raw    syscall.RawConn       // nil where the connection has none: wait returns at once
	peek   func(fd uintptr) bool // r.readable, bound once
	limit  int64                 // the largest message
	onPing func([]byte)          // a ping's payload; the caller answers it
	br     *bufio.Reader         // from readBufs, held only while reading
	skip   int64                 // payload bytes of a too-large frame still to skip
	one    [1]byte               // the peek's buffer
}

func newWSReader(conn net.Conn, limit int64, onPing func([]byte)) *wsReader {
	r := &wsReader{conn: conn, limit: limit, onPing: onPing}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
			r.peek = r.readable
		}
	}
	return r
}

// wait returns once the connection has something to read (or an end to
// report), or with the read deadline's error.
func (r *wsReader) wait() error {
	if r.raw == nil || r.buffered() {
		return nil
	}
	return r.raw.Read(r.peek)
}

// buffered reports whether bytes already read from the socket wait in the
// buffer.
func (r *wsReader) buffered() bool { return r.br != nil && r.br.Buffered() > 0 }

// release gives the buffer back once nothing is buffered.
func (r *wsReader) release() {
	if r.br != nil && r.br.Buffered() == 0 {
		r.drop()
	}
}

// drop gives the buffer back, with whatever it holds: the reading is over.
func (r *wsReader) drop() {
	if r.br != nil {
		r.br.Reset(nil)
		readBufs.Put(r.br)
		r.br = nil
		readBufsHeld.Add(-1)
	}
}

// next reads the next data message, unmasked. Pings go to onPing, pongs
// are dropped, and the client's close frame ends the stream with
// errClientClosed. A message over the limit gives errTooLarge; a frame that
// breaks the protocol, a *protocolError.
func (r *wsReader) next() ([]byte, error) {
	if r.br == nil {
		r.br = readBufs.Get().(*bufio.Reader)
		r.br.Reset(r.conn)
		readBufsHeld.Add(1)
	}
	if r.skip > 0 {
		n, err := io.CopyN(io.Discard, r.br, r.skip)
		r.skip -= n
		if err != nil {
			return nil, err
		}
	}
	state := ws.StateServerSide
	var msg []byte
	for {
		h, err := ws.ReadHeader(r.br)
		if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
			return nil, &protocolError{err.Error()}
		}
		if err != nil {
			return nil, err
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return nil, &protocolError{err.Error()}
		}
		if h.OpCode.IsControl() {
			if err := r.control(h); err != nil {
				return nil, err
			}
			continue
		}
		if h.Length > r.limit-int64(len(msg)) {
			r.skip = h.Length
			return nil, errTooLarge
		}
		// The message grows as its bytes come, not as the header claims:
		// a client that declares 64 KiB and sends nothing costs nothing.
		start := len(msg)
		for left := h.Length; left > 0; {
			n := int(min(left, readBufSize))
			msg = append(msg, make([]byte, n)...)
			if _, err := io.ReadFull(r.br, msg[len(msg)-n:]); err != nil {
				return nil, err
			}
			left -= int64(n)
		}
		ws.Cipher(msg[start:], h.Mask, 0)
		if h.Fin {
			return msg, nil
		}
		state = state.Set(ws.StateFragmented)
	}
}

// control takes a control frame (CheckHeader bounded it to 125 bytes).
func (r *wsReader) control(h ws.Header) error {
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return err
	}
	ws.Cipher(payload, h.Mask, 0)
	switch h.OpCode {
	case ws.OpPing:
		r.onPing(payload)
	case ws.OpClose:
		if len(payload) == 1 {
			return &protocolError{"a close frame of one byte"}
		}
		if len(payload) >= 2 {
			if err := ws.CheckCloseFrameData(ws.ParseCloseFrameData(payload)); err != nil {
				return &protocolError{err.Error()}
			}
		}
		return errClientClosed
	}
	return nil
}

// closeFrame is a server close frame with code and reason (cut to fit the
// 125 bytes a control frame may carry).
func closeFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b := appendFrameHeader(make([]byte, 0, 4+len(reason)), opClose, 2+len(reason))
	return append(append(b, byte(code>>8), byte(code)), reason...)
}
