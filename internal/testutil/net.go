package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// FreeAddr returns a loopback address with a port free at the moment.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitListening waits until addr accepts TCP connections.
func WaitListening(tb testing.TB, addr string) {
	tb.Helper()
	WaitFor(tb, time.Minute, addr+" to listen", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// BuildParley builds the parley binary into dir, for tests that run its
// commands as child processes, and returns its path.
func BuildParley(dir string) (string, error) {
	bin := filepath.Join(dir, "parley")
	build := exec.Command("go", "build", "-o", bin, "github.com/parley-im/parley/cmd/parley")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	return bin, build.Run()
}
