package client

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"
)

// A connection's frames are written in batches: a goroutine that writes
// while no other does writes every frame waiting, those that queue while
// it writes included, each batch in one Write. With several requests in
// flight the frames of a connection then share system calls; on loopback
// a write carries the kernel's delivery to the reader too, and a write a
// frame was a quarter of the load tool's CPU in the dm run.
//
// The frames are encoded here, not by the WebSocket library: it writes
// each message with a Write of its own. The library still writes the
// authentication frame (before any batch) and answers a WebSocket ping
// from a server with a pong; every write is one Write call, which the
// network connection never interleaves with another.

// writeBatch is frames written, or to be written, in one Write.
type writeBatch struct {
	buf   []byte
	final bool          // ends with a close frame: nothing may follow it
	done  chan struct{} // closed when buf was written, or failed
	n     int           // bytes of buf written
	err   error
}

// sent is the fate of a frame that ends at end in the batch: nil if it
// reached the socket whole (even if the write failed after it), else an
// error wrapping errNotSent.
func (b *writeBatch) sent(end int) error {
	if b.err == nil || end <= b.n {
		return nil
	}
	return fmt.Errorf("%w: %v", errNotSent, b.err)
}

// WebSocket opcodes (RFC 6455, 5.2).
const (
	opText  = 0x1
	opClose = 0x8
)

// maxSpareBatch is the largest batch buffer kept for the next batch.
const maxSpareBatch = 64 << 10

// closeWriteTimeout bounds the write of a close frame.
const closeWriteTimeout = time.Second

// write sends one text frame. An error means the frame did not reach the
// server whole (so the server cannot have acted on it): it wraps
// errNotSent. A failed write closes the connection.
func (cn *conn) write(payload []byte) error {
	return cn.writeFrame(opText, payload)
}

// writeFrame queues a frame and returns once its batch is written,
// writing that batch (and any that follow) itself if no other goroutine
// is writing. After a close frame nothing more is queued.
func (cn *conn) writeFrame(op byte, payload []byte) error {
	cn.wmu.Lock()
	if cn.closing {
		cn.wmu.Unlock()
		return errNotSent
	}
	select {
	case <-cn.done:
		cn.wmu.Unlock()
		return errNotSent
	default:
	}
	b := cn.next
	if b == nil {
		b = &writeBatch{buf: cn.spare, done: make(chan struct{})}
		cn.spare = nil
		cn.next = b
	}
	b.buf = appendClientFrame(b.buf, op, payload, rand.Uint32())
	end := len(b.buf)
	if op == opClose {
		b.final, cn.closing = true, true
	}
	if cn.writing {
		cn.wmu.Unlock()
		<-b.done
		return b.sent(end)
	}
	cn.writing = true
	// Let the goroutines that are ready to run queue their frames first:
	// those of requests woken together by one read of replies would each
	// write alone otherwise, one after another.
	cn.wmu.Unlock()
	runtime.Gosched()
	cn.wmu.Lock()
	for cn.next != nil {
		w := cn.next
		cn.next = nil
		cn.wmu.Unlock()
		buf := w.buf
		w.n, w.err = cn.writeBatch(w)
		if w.err != nil {
			cn.close() // before the waiters hear: a retry must not find it open
		}
		close(w.done)
		cn.wmu.Lock()
		if cap(buf) <= maxSpareBatch {
			cn.spare = buf[:0]
		}
	}
	cn.writing = false
	cn.wmu.Unlock()
	return b.sent(end)
}

// writeBatch writes a batch's frames to the network connection.
func (cn *conn) writeBatch(b *writeBatch) (int, error) {
	timeout := cn.c.cfg.RequestTimeout
	if b.final {
		timeout = min(timeout, closeWriteTimeout)
	}
	nc := cn.ws.NetConn()
	if err := nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	n, err := nc.Write(b.buf)
	if err == nil {
		cn.lastWrite.Store(monoNow())
	}
	return n, err
}

// appendClientFrame appends a final frame of op with payload, masked with
// key as RFC 6455 requires of a client (5.3).
func appendClientFrame(dst []byte, op byte, payload []byte, key uint32) []byte {
	const fin, masked = 0x80, 0x80
	dst = append(dst, fin|op)
	switch n := len(payload); {
	case n <= 125:
		dst = append(dst, masked|byte(n))
	case n <= 0xffff:
		dst = append(dst, masked|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, masked|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = binary.LittleEndian.AppendUint32(dst, key)
	start := len(dst)
	dst = append(dst, payload...)
	mask(dst[start:], key)
	return dst
}

// mask XORs p with key, whose little-endian bytes are the masking key:
// byte i of p with byte i%4 of the key.
func mask(p []byte, key uint32) {
	k := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k)
	}
	for ; i < len(p); i++ {
		p[i] ^= byte(key >> (8 * (i & 3)))
	}
}
