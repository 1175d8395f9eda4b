package connector

import (
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
// is readable and then reads what came straight into a pooled buffer (one
// read where the socket is ready; where it is not, the buffer goes back to
// the pool before the goroutine parks). The messages are handled from that
// buffer; once nothing is left in it, the buffer goes back to the pool and
// the next wait to a fresh goroutine. Go's poller (epoll on Linux) does the
// waiting.

// readBufSize is the pooled read buffer's size: a typical burst of frames
// fits; a larger message is read past it.
const readBufSize = 4 << 10

var readBufs = sync.Pool{New: func() any { return new([readBufSize]byte) }}

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
	raw    syscall.RawConn       // nil without raw reads: wait returns at once
	fill   func(fd uintptr) bool // r.fillOnce, bound once
	limit  int64                 // the largest message
	onPing func([]byte)          // a ping's payload; the caller answers it
	buf    *[readBufSize]byte    // from readBufs, held only while reading
	r, w   int                   // buf[r:w] is read from the socket, not yet taken
	err    error                 // fillOnce's read error
	skip   int64                 // payload bytes of a too-large frame still to skip
}

func newWSReader(conn net.Conn, limit int64, onPing func([]byte)) *wsReader {
	r := &wsReader{conn: conn, limit: limit, onPing: onPing}
	r.useRawReads()
	return r
}

// wait returns once bytes from the connection are buffered, or with why
// none will come: the read deadline, the end of the stream, a failed read.
// Where the connection offers no raw reads it returns at once and next
// does the waiting.
func (r *wsReader) wait() error {
	if r.raw == nil || r.buffered() {
		return nil
	}
	if err := r.raw.Read(r.fill); err != nil {
		return err
	}
	err := r.err
	r.err = nil
	return err
}

// buffered reports whether bytes already read from the socket wait in the
// buffer.
func (r *wsReader) buffered() bool { return r.r < r.w }

// take gets a buffer from the pool, unless one is held.
func (r *wsReader) take() {
	if r.buf == nil {
		r.buf = readBufs.Get().(*[readBufSize]byte)
		r.r, r.w = 0, 0
		readBufsHeld.Add(1)
	}
}

// release gives the buffer back once nothing is buffered.
func (r *wsReader) release() {
	if !r.buffered() {
		r.drop()
	}
}

// drop gives the buffer back, with whatever it holds: the reading is over.
func (r *wsReader) drop() {
	if r.buf != nil {
		readBufs.Put(r.buf)
		r.buf = nil
		r.r, r.w = 0, 0
		readBufsHeld.Add(-1)
	}
}

// Read reads through the buffer: what is buffered first, then the
// connection, blocking under its read deadline. A read as large as the
// buffer bypasses it.
func (r *wsReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !r.buffered() {
		r.take()
		if len(p) >= readBufSize {
			return r.conn.Read(p)
		}
		n, err := r.conn.Read(r.buf[:])
		r.r, r.w = 0, n
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

// next reads the next data message, unmasked. Pings go to onPing, pongs
// are dropped, and the client's close frame ends the stream with
// errClientClosed. A message over the limit gives errTooLarge; a frame that
// breaks the protocol, a *protocolError.
func (r *wsReader) next() ([]byte, error) {
	r.take()
	if r.skip > 0 {
		n, err := io.CopyN(io.Discard, r, r.skip)
		r.skip -= n
		if err != nil {
			return nil, err
		}
	}
	state := ws.StateServerSide
	var msg []byte
	for {
		h, err := ws.ReadHeader(r)
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
			if _, err := io.ReadFull(r, msg[len(msg)-n:]); err != nil {
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
	if _, err := io.ReadFull(r, payload); err != nil {
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
