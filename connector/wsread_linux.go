package connector

import (
	"io"
	"os"
	"syscall"
)

// useRawReads lets wait read the socket itself: one read system call for a
// ready socket, where a check of readiness and then a read would take two.
func (r *wsReader) useRawReads() {
	if sc, ok := r.conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
			r.fill = r.fillOnce
		}
	}
}

// fillOnce reads what the socket holds into a pooled buffer (nothing is
// buffered when wait calls it). It reports true once it read bytes, or
// failed or reached the end (r.err); false, with the buffer given back,
// when nothing is there yet, for the poller to wait.
func (r *wsReader) fillOnce(fd uintptr) bool {
	r.take()
	for {
		n, err := syscall.Read(int(fd), r.buf[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.drop()
			return false
		case err != nil:
			r.err = os.NewSyscallError("read", err)
		case n == 0:
			r.err = io.EOF
		default:
			r.r, r.w = 0, n
		}
		return true
	}
}
