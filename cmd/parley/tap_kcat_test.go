package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/schema"
)

// repoRoot is the repository root, seen from this package's directory
// (where go test runs its tests).
const repoRoot = "../.."

// needTools fails the test when a tool the outside-consumer test runs is
// missing: scripts/deps installs them, and the test never skips.
func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"kcat", "protoc", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/deps", tool)
		}
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import google.protobuf").CombinedOutput(); err != nil {
		t.Fatalf("Debian's python3-protobuf is not installed for /usr/bin/python3 (%v: %s): run scripts/deps", err, out)
	}
}

// devProcess is a `parley dev` child process.
type devProcess struct {
	broker, api, apiKey string
}

// startDevBinary builds the binary and starts `parley dev` on loopback
// port 0 with a fresh data dir; it is stopped (SIGTERM to its pid) when
// the test ends. It returns the binary's path too.
func startDevBinary(t *testing.T) (devProcess, string) {
	t.Helper()
	dir := t.TempDir()
	bin, err := testutil.BuildParley(dir)
	if err != nil {
		t.Fatalf("go build: %v", err)
	}
	cmd := exec.Command(bin, "dev", "--data-dir", filepath.Join(dir, "data"), "--broker-listen", "127.0.0.1:0",
		"--listen", "127.0.0.1:0", "--partitions", "2", "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("parley dev did not stop cleanly on SIGTERM: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("parley dev did not stop within 30s of SIGTERM")
		}
	})
	b := testutil.ReadDevBanner(t, stdout, 60*time.Second)
	if b.Broker == "" || b.API == "" || b.APIKey == "" {
		t.Fatalf("parley dev printed broker %q, HTTP API %q, API key %q", b.Broker, b.API, b.APIKey)
	}
	return devProcess{broker: b.Broker, api: b.API, apiKey: b.APIKey}, bin
}

// call makes an HTTP API call and decodes its 200 answer into out.
func (d devProcess) call(t *testing.T, path string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, d.api+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.apiKey)
	req.Header.Set("Content-Type", "application/json")
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("POST %s: %s %v", path, resp.Status, e)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
}

// run runs a shell pipeline from the repository root, failing the test
// if any part of it fails, and returns its standard output.
func run(t *testing.T, pipeline string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail; "+pipeline)
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s\n%v: %s", pipeline, err, stderr.String())
	}
	return string(out)
}

// pythonExample returns the Python example of schema/README.md's section
// on outside consumers.
func pythonExample(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "schema", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Consuming parley.events from another language\n")
	if ok {
		section, _, _ = strings.Cut(section, "\n## ")
		_, code, found := strings.Cut(section, "```python\n")
		if code, _, closed := strings.Cut(code, "```"); found && closed {
			return code
		}
	}
	t.Fatal("schema/README.md has no Python example under \"Consuming parley.events from another language\"")
	return ""
}

// TestOutsideConsumers runs the real binary as `parley dev`, sends a few
// messages through its HTTP API, and reads them back with tools that share
// no code with Parley: Debian's kcat reads the events topic
// (read_committed), protoc decodes a record against schema/*.proto, and the
// Python example of schema/README.md decodes every record with Debian's
// python3-protobuf. `parley tap` with filters prints the same events.
func TestOutsideConsumers(t *testing.T) {
	needTools(t)
	began := time.Now()
	d, bin := startDevBinary(t)
	t.Logf("parley dev up after %v", time.Since(began))

	var created struct{ Conv string }
	d.call(t, "/conversations", map[string]any{"kind": "group", "as": "alice", "members": []string{"bob"}, "title": "outside"}, &created)
	conv := created.Conv
	texts := []string{"first words", "second, with \"quotes\"", "third ünïcödé"}
	for i, text := range texts {
		var sent struct{ Seq int64 }
		d.call(t, "/conversations/"+conv+"/messages", map[string]any{
			"from": "alice", "cmid": fmt.Sprintf("m%d", i), "body": map[string]string{"text": text}}, &sent)
		if sent.Seq != int64(i+2) {
			t.Fatalf("message %d got seq %d, want %d", i, sent.Seq, i+2)
		}
	}

	// Every committed record, as kcat lists it: the conversation's four
	// events, on one partition, in seq order.
	kcat := "kcat -C -b " + d.broker + " -t parley.events -X isolation.level=read_committed -e -q"
	type rec struct{ partition, offset string }
	var recs []rec
	for _, line := range strings.Split(strings.TrimSpace(run(t, kcat+" -o beginning -f '%p %o %k\\n'")), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("kcat listed %q", line)
		}
		if f[2] == conv {
			recs = append(recs, rec{f[0], f[1]})
		}
	}
	if len(recs) != 4 || recs[0].partition != recs[3].partition {
		t.Fatalf("kcat listed %d records of %s (%v), want 4 on one partition", len(recs), conv, recs)
	}

	// The record of seq 3, decoded by protoc.
	second := recs[2]
	decoded := run(t, kcat+" -p "+second.partition+" -o "+second.offset+" -c 1 -f '%s' | "+
		"protoc --decode=parley.v1.Event -I schema schema/parley/v1/*.proto")
	body, _ := json.Marshal(map[string]string{"text": texts[1]})
	for _, want := range []string{
		fmt.Sprintf("conv: %q\n", conv), "seq: 3\n", "type: EVENT_TYPE_MESSAGE\n", "from: \"alice\"\n", "cmid: \"m1\"\n",
		`body: "{\"text\":\"second, with \\\"quotes\\\"\"}"`,
	} {
		if !strings.Contains(decoded, want) {
			t.Errorf("protoc decoded the record of seq 3 as\n%s\nwhich lacks %s (the body sent was %s)", decoded, want, body)
		}
	}

	// The README's Python example over every record.
	pyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(pyDir, "events.py"), []byte(pythonExample(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "protoc --python_out="+pyDir+" -I schema schema/parley/v1/event.proto")
	py := run(t, kcat+" -o beginning -f '%p %o %S %k\\n%s' | PYTHONPATH="+pyDir+" /usr/bin/python3 "+filepath.Join(pyDir, "events.py"))
	want := conv + " 1 created alice \n"
	for i, text := range texts {
		b, _ := json.Marshal(map[string]string{"text": text})
		want += fmt.Sprintf("%s %d message alice %s\n", conv, i+2, b)
	}
	if py != want {
		t.Errorf("the Python example printed\n%s\nwant\n%s", py, want)
	}

	// parley tap with filters, as a user runs it.
	tapLines := func(args ...string) []schema.EventJSON {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"tap", "--brokers", d.broker, "--follow=false", "--log-level", "warn"}, args...)...).Output()
		if err != nil {
			t.Fatalf("parley tap %v: %v", args, err)
		}
		var evs []schema.EventJSON
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var ev schema.EventJSON
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("parley tap %v printed %q: %v", args, sc.Text(), err)
			}
			evs = append(evs, ev)
		}
		return evs
	}
	seqs := func(evs []schema.EventJSON) string { return fmt.Sprint(evsSeqs(evs)) }
	if got := tapLines("--conv", conv, "--type", "message"); seqs(got) != "[2 3 4]" || !strings.Contains(string(got[1].Body), "quotes") {
		t.Errorf("tap --conv --type message printed seqs %s: %+v", seqs(got), got)
	}
	if got := tapLines("--conv", conv, "--from-offset", second.partition+":"+second.offset); seqs(got) != "[3 4]" {
		t.Errorf("tap --from-offset %s:%s printed seqs %s", second.partition, second.offset, seqs(got))
	}
	if got := tapLines("--type", "created,member_added", "--since", "10m"); seqs(got) != "[1]" {
		t.Errorf("tap --type created,member_added --since 10m printed seqs %s", seqs(got))
	}
	if got := tapLines("--since", "2099-01-01T00:00:00Z"); len(got) != 0 {
		t.Errorf("tap --since 2099 printed %d events", len(got))
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Logf("took %v: over the 30 s this test should take", took)
	}
}

func evsSeqs(evs []schema.EventJSON) []int64 {
	s := make([]int64, len(evs))
	for i, ev := range evs {
		s[i] = ev.Seq
	}
	return s
}

// TestTapFlagErrors: bad tap flags are refused with an error that names
// the flag and says what is wanted, before anything is dialled.
func TestTapFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "message,bogus"}, `--type: unknown event type "bogus": the types are message, edit, revoke, created, member_added, member_removed, read`},
		{[]string{"--conv", "a/b"}, `--conv: "a/b" is not a conversation id`},
		{[]string{"--from-offset", "x"}, `--from-offset: "x": the offset must be a number`},
		{[]string{"--from-offset", "1:2", "--from-offset", "1:3"}, `--from-offset: "1:3": partition 1 is given twice`},
		{[]string{"--from-offset", "-4"}, `--from-offset: "-4"`},
		{[]string{"--since", "last week"}, `--since: "last week" is neither an RFC 3339 time`},
		{[]string{"--since", "-5m"}, `--since: "-5m": a duration means that long ago and must not be negative`},
		{[]string{"--since", "1h", "--from-offset", "0"}, "--since and --from-offset both say where to start"},
	} {
		err := runTap(context.Background(), append([]string{"--brokers", "127.0.0.1:1"}, c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parley tap %v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
