package connector

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// retryListener keeps a server accepting through failures that pass, such
// as running out of file descriptors under a connection flood: Accept backs
// off and tries again instead of ending the server. Closing the listener
// still ends it.
type retryListener struct {
	net.Listener
	log *slog.Logger
}

// transientAccept reports whether an Accept error is worth waiting out.
func transientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l retryListener) Accept() (net.Conn, error) {
	delay := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil || !transientAccept(err) {
			return c, err
		}
		if delay == 5*time.Millisecond {
			l.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err)
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}
