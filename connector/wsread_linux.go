package connector

import "syscall"

// readable reports whether the socket has bytes to read or an end to
// report, taking nothing from it; false makes the poller wait.
func (r *wsReader) readable(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), r.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN && err != syscall.EINTR
}
