package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort has a socket bound to a source address pick its port only at
// connect, by the whole address pair (IP_BIND_ADDRESS_NO_PORT). Without
// it, binding takes a port of its own for good: tens of thousands of
// connections bound that way use up the ephemeral ports, and then even
// connections that are not bound find none.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}

// childAttr has a child process of the tool killed when the tool dies, so
// that servers and workers never outlive a run that was killed.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
