package docker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/testutil"
)

// TestDashboardMetricsServed: every metric the dashboard (and any rule
// Prometheus loads) queries is one the parley binary serves, with the
// labels the queries match on and group by. It runs `parley dev`, which
// holds every role in one process, puts traffic through it — a group
// conversation made with the HTTP API, two devices connected with the Go
// client, messages sent both ways, one member offline, a token refused —
// and reads its admin /metrics. The job and instance labels are
// Prometheus's own and are not looked for.
func TestDashboardMetricsServed(t *testing.T) {
	queries := append(loadDashboard(t).queries(t), ruleQueries(t)...)
	bin := buildParley(t)
	dev := startDev(t, bin)
	dev.traffic(t)

	var missing []string
	var last time.Time
	served := t.Run("served", func(t *testing.T) {
		// Some series appear a moment after the traffic: the consumer lag
		// once a group has committed, the writer's batch.
		testutil.WaitFor(t, 15*time.Second, "every metric the dashboard uses to be served", func() bool {
			if time.Since(last) < 250*time.Millisecond {
				return false
			}
			last = time.Now()
			fams, err := scrape(dev.admin)
			if err != nil {
				missing = []string{"(scrape failed: " + err.Error() + ")"}
				return false
			}
			missing = unserved(t, queries, fams)
			return len(missing) == 0
		})
	})
	if !served {
		t.Errorf("parley dev does not serve %d of the metrics or labels the dashboard uses:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
}

// unserved returns what the queries use that fams lacks, one line each.
func unserved(t *testing.T, queries []query, fams map[string]*family) []string {
	set := map[string]bool{}
	hasLabel := func(metric, label, value string, anyValue bool) bool {
		f := fams[metric]
		if f == nil {
			f = fams[baseName(metric)]
		}
		if f == nil {
			return false
		}
		for _, s := range f.series {
			if v, ok := s[label]; ok && (anyValue || v == value) {
				return true
			}
		}
		return false
	}
	prometheusLabel := func(l string) bool { return l == "job" || l == "instance" }
	for _, q := range queries {
		r, err := parsePromQL(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		var present []string
		for _, m := range r.metrics {
			if fams[m] == nil && fams[baseName(m)] == nil {
				set[fmt.Sprintf("%s (%s)", baseName(m), q.where)] = true
				continue
			}
			present = append(present, m)
		}
		for _, mt := range r.matchers {
			if prometheusLabel(mt.label) || !slices.Contains(present, mt.metric) {
				continue
			}
			exact := mt.op == "="
			if !hasLabel(mt.metric, mt.label, mt.value, !exact) {
				want := mt.label
				if exact {
					want = fmt.Sprintf("%s=%q", mt.label, mt.value)
				}
				set[fmt.Sprintf("%s{%s} (%s)", baseName(mt.metric), want, q.where)] = true
			}
		}
		if len(present) < len(r.metrics) {
			// A label of a missing metric cannot be looked for.
			continue
		}
		labels := slices.Clone(r.grouping)
		if q.label != "" {
			labels = append(labels, q.label)
		}
		for _, l := range labels {
			if prometheusLabel(l) {
				continue
			}
			found := false
			for _, m := range present {
				if l == "le" && strings.HasSuffix(m, "_bucket") || l != "le" && hasLabel(m, l, "", true) {
					found = true
				}
			}
			if !found {
				set[fmt.Sprintf("label %s on %s (%s)", l, strings.Join(present, ", "), q.where)] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// family is one metric of a scrape: its type and its series' labels.
type family struct {
	typ    string
	series []map[string]string
}

// scrape reads the text exposition at http://addr/metrics into families,
// keyed by the metric's name (a histogram's series under its base name).
func scrape(addr string) (map[string]*family, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	fams := map[string]*family{}
	get := func(name string) *family {
		if fams[name] == nil {
			fams[name] = &family{}
		}
		return fams[name]
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			get(name).typ = typ
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		if b := baseName(name); b != name && fams[b] != nil && (fams[b].typ == "histogram" || fams[b].typ == "summary") {
			name = b
		}
		f := get(name)
		f.series = append(f.series, labels)
	}
	return fams, sc.Err()
}

// parseSample splits `name{label="value",…} value` into the name and labels.
func parseSample(line string) (string, map[string]string, error) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", nil, fmt.Errorf("no value")
	}
	name, labels := line[:i], map[string]string{}
	if line[i] == ' ' {
		return name, labels, nil
	}
	s := line[i+1:]
	for {
		s = strings.TrimLeft(s, ", ")
		if strings.HasPrefix(s, "}") {
			return name, labels, nil
		}
		k, rest, ok := strings.Cut(s, `="`)
		if !ok {
			return "", nil, fmt.Errorf("bad labels")
		}
		var v strings.Builder
		j := 0
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if rest[j] == '\\' && j+1 < len(rest) {
				j++
				if rest[j] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(rest[j])
		}
		if j == len(rest) {
			return "", nil, fmt.Errorf("unclosed label value")
		}
		labels[k] = v.String()
		s = rest[j+1:]
	}
}

// devNode is a `parley dev` process started by a test.
type devNode struct {
	listen, admin string
	apiKey        string
}

// startDev starts `parley dev` on loopback ports with a temporary data dir,
// waits until it is ready, and stops it by its pid (SIGTERM) when the test
// ends, printing its output if the test failed.
func startDev(t *testing.T, bin string) *devNode {
	t.Helper()
	dir := t.TempDir()
	n := &devNode{listen: testutil.FreeAddr(t), admin: testutil.FreeAddr(t), apiKey: "docker-test-api-key"}
	out, err := os.Create(filepath.Join(dir, "parley.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev",
		"--data-dir="+filepath.Join(dir, "data"),
		"--listen="+n.listen,
		"--broker-listen="+testutil.FreeAddr(t),
		"--admin-listen="+n.admin,
		"--api-key="+n.apiKey,
		"--token-secret="+strings.Repeat("docker-test-secret", 2),
		"--partitions=2",
		"--log-level=warn",
	)
	// Only what the command line says: none of the caller's PARLEY_ variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARLEY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Errorf("SIGTERM to parley dev (pid %d): %v", cmd.Process.Pid, err)
			}
		}
		stop := time.NewTimer(20 * time.Second)
		defer stop.Stop()
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("parley dev: %v", waitErr)
			}
		case <-stop.C:
			t.Errorf("parley dev (pid %d) did not stop within 20 s of SIGTERM; killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("parley dev's output:\n%s", b)
		}
	})
	testutil.WaitFor(t, 30*time.Second, "parley dev to be ready", func() bool {
		select {
		case <-exited:
			t.Fatalf("parley dev exited at start: %v", waitErr)
		default:
		}
		resp, err := http.Get("http://" + n.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	testutil.WaitListening(t, n.listen)
	return n
}

// api makes one HTTP API call and decodes its JSON answer into out.
func (n *devNode) api(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.listen+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// traffic puts every kind of work the dashboard plots through the node.
func (n *devNode) traffic(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token := func(user string) string {
		var tok struct{ Token string }
		n.api(t, http.MethodPost, "/v1/tokens", map[string]any{"user": user, "ttl_s": 600}, &tok)
		return tok.Token
	}
	// carol never connects: fanout writes her notifications.
	var created struct{ Conv string }
	n.api(t, http.MethodPost, "/v1/conversations", map[string]any{"kind": "group", "members": []string{"bob", "carol"}, "title": "metrics", "as": "alice"}, &created)
	conv := created.Conv
	dial := func(user, tok string) (*client.Client, error) {
		return client.Dial(ctx, client.Config{
			URLs: []string{"ws://" + n.listen + "/v1/ws"}, Device: user + "-phone",
			Token:   func(context.Context) (string, error) { return tok, nil },
			Tracked: map[string]int64{conv: 0},
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}
	if c, err := dial("mallory", "not-a-token"); err == nil {
		c.Close()
		t.Fatal("a forged token was accepted")
	}
	alice, err := dial("alice", token("alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := dial("bob", token("bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	const sends = 5
	for i := range sends {
		if _, err := alice.Send(ctx, conv, "text", fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	n.api(t, http.MethodPost, "/v1/conversations/"+conv+"/messages", map[string]any{"from": "bob", "cmid": "api-1", "kind": "text", "body": "from the API"}, nil)
	messages := 0
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for messages < sends+1 {
		select {
		case ev := <-bob.Events():
			if ev.Type == "message" {
				messages++
			}
		case <-deadline.C:
			t.Fatalf("bob got %d of %d messages", messages, sends+1)
		}
	}
	if _, err := bob.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	n.api(t, http.MethodGet, "/v1/conversations/"+conv+"/events?after=0&limit=100", nil, nil)
	n.api(t, http.MethodGet, "/v1/users/alice/conversations", nil, nil)
}
