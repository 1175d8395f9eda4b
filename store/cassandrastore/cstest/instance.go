package cstest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Instance is a Cassandra node of a test's own, started by scripts/cassandra,
// for tests that kill and restart it (the shared one is used by tests that
// run at the same time).
type Instance struct {
	t    testing.TB
	Dir  string
	Port int
	pid  int
}

// Launch starts a Cassandra node for t alone and stops it when t ends. It
// needs what the shared one needs (java, the download scripts/cassandra
// caches), so it runs where Cassandra tests are asked for: with
// PARLEY_TEST_CASSANDRA or PARLEY_REQUIRE_CASSANDRA set; it skips otherwise.
func Launch(t testing.TB) *Instance {
	t.Helper()
	if os.Getenv(EnvAddr) == "" && os.Getenv(EnvRequired) == "" {
		t.Skipf("no Cassandra: neither %s nor %s is set (./scripts/test sets both)", EnvAddr, EnvRequired)
	}
	in := &Instance{t: t, Dir: filepath.Join(t.TempDir(), "cassandra")}
	if err := os.MkdirAll(in.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in.run("start", "--dir", in.Dir)
	t.Cleanup(func() {
		out, err := exec.Command(script(t), "stop", "--dir", in.Dir).CombinedOutput()
		if err != nil {
			t.Logf("stopping Cassandra in %s: %v\n%s", in.Dir, err, out)
		}
		if t.Failed() {
			// The node's own account, before and after a restart: the
			// test's directory goes when it ends.
			for _, name := range []string{"system.log.prev", "system.log"} {
				t.Logf("--- Cassandra %s (last %d lines) ---\n%s", name, logTail, tail(filepath.Join(in.Dir, name), logTail))
			}
		}
	})
	return in
}

// logTail is how many lines of a failed test's node logs it shows.
const logTail = 80

// tail returns the last n lines of the file at path, or why it cannot.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Kill ends the node with SIGKILL and waits until it is gone.
func (in *Instance) Kill() {
	in.t.Helper()
	if err := syscall.Kill(in.pid, syscall.SIGKILL); err != nil {
		in.t.Fatalf("kill Cassandra %d: %v", in.pid, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(in.pid, 0) == nil {
		if time.Now().After(deadline) {
			in.t.Fatalf("Cassandra %d still alive 30s after SIGKILL", in.pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart starts the node again on the same directory and ports; it
// returns once the node answers CQL.
func (in *Instance) Restart() { in.t.Helper(); in.run("restart", "--dir", in.Dir) }

func (in *Instance) run(args ...string) {
	in.t.Helper()
	cmd := exec.Command(script(in.t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		in.t.Fatalf("scripts/cassandra %v: %v\n%s", args, err, stderr.Bytes())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "CASSANDRA_PID":
			in.pid, _ = strconv.Atoi(v)
		case "CASSANDRA_PORT":
			in.Port, _ = strconv.Atoi(v)
		}
	}
	if in.pid == 0 || in.Port == 0 {
		in.t.Fatalf("scripts/cassandra %v printed no pid and port:\n%s", args, out)
	}
}

// script finds scripts/cassandra from the test's working directory.
func script(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "scripts", "cassandra")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("scripts/cassandra not found above the test's directory")
		}
		dir = parent
	}
}
