// The tests of this directory hold the compose cluster's files to the
// binary they run: no Docker engine is needed, and none is started. They
// check that every parley service runs a real command with flags and
// PARLEY_* variables that command has, that the ports of the listeners,
// the exposed ports, nginx's upstreams, Prometheus's targets and Grafana's
// datasource agree, and that every metric the dashboard plots is one
// parley serves.
package docker

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/parley-im/parley/internal/testutil"
)

// compose is the part of docker/compose.yaml the tests read.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       *build            `yaml:"build"`
	Hostname    string            `yaml:"hostname"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Expose      []string          `yaml:"expose"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   dependsOn         `yaml:"depends_on"`
	Restart     string            `yaml:"restart"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// dependsOn maps a service to the condition it is waited for; the short
// (list) form waits for service_started.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		for _, s := range names {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var long map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&long); err != nil {
		return err
	}
	for s, c := range long {
		if c.Condition == "" {
			c.Condition = "service_started"
		}
		(*d)[s] = c.Condition
	}
	return nil
}

// parleyDockerfile is the Dockerfile of the parley image, relative to the
// repository root: a service built from it is a parley service.
const parleyDockerfile = "docker/Dockerfile"

// loadCompose reads compose.yaml with every ${VAR:-default} replaced by its
// default, as Compose does with neither the variable set nor a .env file,
// and returns the variables it met with their defaults. A variable without
// a default fails the test: the cluster must come up with none set.
func loadCompose(t *testing.T) (*compose, map[string]string) {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	vars := map[string]string{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch n.Kind {
		case yaml.ScalarNode:
			v, err := interpolate(n.Value, vars)
			if err != nil {
				t.Errorf("compose.yaml line %d: %v", n.Line, err)
			}
			n.Value = v
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c)
			}
		case yaml.MappingNode:
			// Values only: Compose does not interpolate keys.
			for i := 1; i < len(n.Content); i += 2 {
				walk(n.Content[i])
			}
		}
		// An alias is walked where its anchor is defined.
	}
	walk(&root)
	var c compose
	if err := root.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml has no services")
	}
	return &c, vars
}

var varRef = regexp.MustCompile(`\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)`)
var varDefault = regexp.MustCompile(`^\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}$`)

// interpolate replaces each ${NAME:-default} of s by its default and
// records it in vars; $$ is a literal $. Any other form is an error here.
func interpolate(s string, vars map[string]string) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$$" {
			return "$"
		}
		m := varDefault.FindStringSubmatch(ref[1:])
		if m == nil {
			err = fmt.Errorf("%s: write variables as ${NAME:-default}, so that the cluster starts with none set", ref)
			return ref
		}
		if d, ok := vars[m[1]]; ok && d != m[2] {
			err = fmt.Errorf("%s has two defaults, %q and %q", m[1], d, m[2])
		}
		vars[m[1]] = m[2]
		return m[2]
	})
	return out, err
}

// parleyServices returns the names of the services built from the parley
// Dockerfile, sorted.
func (c *compose) parleyServices() []string {
	var names []string
	for name, s := range c.Services {
		if s.Build != nil && s.Build.Dockerfile == parleyDockerfile {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// role is the parley command a service runs.
func (s service) role() string {
	if len(s.Command) == 0 {
		return ""
	}
	return s.Command[0]
}

// flag returns the value a parley service gives flag name, from its
// command line (which wins, as in the binary) or its PARLEY_* variable.
func (s service) flag(name string) (string, bool) {
	for i, a := range s.Command {
		if i == 0 {
			continue // the command's name
		}
		if n, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "="); ok && n == name {
			return v, true
		}
	}
	v, ok := s.Environment["PARLEY_"+envName(name)]
	return v, ok
}

// envName is the variable part of a flag's PARLEY_ name: upper case,
// dashes as underscores.
func envName(flag string) string {
	return strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// containerPorts returns the ports a service exposes to the compose network:
// expose, and the container side of ports.
func (s service) containerPorts() []string {
	ports := slices.Clone(s.Expose)
	for _, p := range s.Ports {
		p, _, _ = strings.Cut(p, "/")
		ports = append(ports, p[strings.LastIndex(p, ":")+1:])
	}
	return ports
}

// publishedPorts maps the container side of a service's ports to the host side.
func (s service) publishedPorts() map[string]string {
	m := map[string]string{}
	for _, p := range s.Ports {
		p, _, _ = strings.Cut(p, "/")
		parts := strings.Split(p, ":")
		if len(parts) >= 2 {
			m[parts[len(parts)-1]] = parts[len(parts)-2]
		}
	}
	return m
}

// buildParley builds the parley binary into a temporary directory.
func buildParley(t *testing.T) string {
	t.Helper()
	bin, err := testutil.BuildParley(t.TempDir())
	if err != nil {
		t.Fatalf("go build ./cmd/parley: %v", err)
	}
	return bin
}

// parleyCommands returns the commands `parley help` lists.
func parleyCommands(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, err := exec.Command(bin, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("parley help: %v\n%s", err, out)
	}
	_, list, ok := strings.Cut(string(out), "commands:\n")
	if !ok {
		t.Fatalf("parley help lists no commands:\n%s", out)
	}
	cmds := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z]+)  `).FindAllStringSubmatch(list, -1) {
		cmds[m[1]] = true
	}
	if !cmds["connector"] {
		t.Fatalf("parley help lists no connector command:\n%s", out)
	}
	return cmds
}

// commandFlags returns the flags `parley <cmd> -h` lists.
func commandFlags(t *testing.T, bin, cmd string) map[string]bool {
	t.Helper()
	c := exec.Command(bin, cmd, "-h")
	c.Env = []string{}
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("parley %s -h: %v\n%s", cmd, err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("parley %s -h lists no flags:\n%s", cmd, out)
	}
	return flags
}

// TestComposeCommands: every parley service runs a command of the binary
// with flags and PARLEY_* variables that command lists, with values its
// flag parser accepts, and the cluster has the shape the README describes.
func TestComposeCommands(t *testing.T) {
	c, _ := loadCompose(t)
	bin := buildParley(t)
	cmds := parleyCommands(t, bin)
	flagsOf := map[string]map[string]bool{}
	perRole := map[string][]string{}
	for _, name := range c.parleyServices() {
		s := c.Services[name]
		role := s.role()
		if !cmds[role] || role == "help" {
			t.Errorf("%s: command %q is not a parley command (parley help lists %v)", name, s.Command, slices.Sorted(maps.Keys(cmds)))
			continue
		}
		perRole[role] = append(perRole[role], name)
		if flagsOf[role] == nil {
			flagsOf[role] = commandFlags(t, bin, role)
		}
		flags := flagsOf[role]
		for _, a := range s.Command[1:] {
			if !strings.HasPrefix(a, "--") {
				t.Errorf("%s: argument %q: write each flag as --name=value", name, a)
				continue
			}
			n, _, _ := strings.Cut(a[2:], "=")
			if !flags[n] {
				t.Errorf("%s: parley %s has no flag --%s", name, role, n)
			}
		}
		env := []string{}
		for k, v := range s.Environment {
			n, ok := strings.CutPrefix(k, "PARLEY_")
			if !ok {
				t.Errorf("%s: %s is not a PARLEY_ variable: parley reads nothing else", name, k)
				continue
			}
			if f := strings.ToLower(strings.ReplaceAll(n, "_", "-")); !flags[f] || envName(f) != n {
				t.Errorf("%s: %s names no flag of parley %s", name, k, role)
			}
			env = append(env, k+"="+v)
		}
		// The binary's own parser takes the variables and the arguments as
		// the container would give them, then stops at -h: a value it
		// cannot parse (a duration, a number, a bool) fails here.
		run := exec.Command(bin, append(slices.Clone(s.Command), "-h")...)
		run.Env = env
		if out, err := run.CombinedOutput(); err != nil {
			t.Errorf("%s: parley %s does not accept its configuration: %v\n%s", name, strings.Join(s.Command, " "), err, out)
		}
	}
	for role, want := range map[string]int{"migrate": 1, "connector": 2, "sequencer": 2, "writer": 2, "fanout": 2} {
		if got := len(perRole[role]); got != want {
			t.Errorf("%d services run parley %s (%v), want %d", got, role, perRole[role], want)
		}
	}
	// Instances of a role that must not share an identity.
	for role, flag := range map[string]string{"sequencer": "node-id", "connector": "node-id", "fanout": "instance-id"} {
		seen := map[string]string{}
		for _, name := range perRole[role] {
			v, ok := c.Services[name].flag(flag)
			if !ok || v == "" {
				t.Errorf("%s: no --%s", name, flag)
				continue
			}
			if other, dup := seen[v]; dup {
				t.Errorf("%s and %s share --%s=%s", other, name, flag, v)
			}
			seen[v] = name
		}
	}
}

// TestComposeWiring: start-up order, ports and addresses agree across the
// services, nginx, Prometheus and Grafana.
func TestComposeWiring(t *testing.T) {
	c, vars := loadCompose(t)
	parley := c.parleyServices()

	// Every dependency exists and can be met.
	for name, s := range c.Services {
		for dep, cond := range s.DependsOn {
			d, ok := c.Services[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on %s, which is no service", name, dep)
			case cond == "service_healthy" && d.Healthcheck == nil:
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			case cond == "service_completed_successfully" && d.Restart != "no":
				t.Errorf("%s waits for %s to complete, which must then have restart: \"no\" (it has %q)", name, dep, d.Restart)
			case cond != "service_started" && cond != "service_healthy" && cond != "service_completed_successfully":
				t.Errorf("%s depends on %s with condition %q", name, dep, cond)
			}
		}
	}

	kafkas := c.kafkaServices(t)
	for _, name := range parley {
		s := c.Services[name]
		if s.Image != "parley:dev" || s.Build.Context != ".." {
			t.Errorf("%s: image %q built from %q; want parley:dev from .. (the repository root)", name, s.Image, s.Build.Context)
		}
		if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if s.role() != "migrate" {
			if s.DependsOn["migrate"] != "service_completed_successfully" {
				t.Errorf("%s does not wait for migrate to complete", name)
			}
			if v, ok := s.flag("admin-listen"); !ok || v == "" {
				t.Errorf("%s has no --admin-listen: Prometheus cannot scrape it", name)
			}
		}
		// Listeners are reachable on the ports the service exposes.
		for _, f := range []string{"listen", "admin-listen", "push-listen"} {
			addr, ok := s.flag(f)
			if !ok || addr == "" {
				continue
			}
			_, port := splitHostPort(t, name, addr)
			if !slices.Contains(s.containerPorts(), port) {
				t.Errorf("%s: --%s=%s, but the service exposes %v", name, f, addr, s.containerPorts())
			}
		}
		if s.role() == "connector" {
			pl, _ := s.flag("push-listen")
			pa, _ := s.flag("push-advertise")
			if pl == "" || pa == "" {
				t.Errorf("%s: a connector needs --push-listen and --push-advertise, or fanout cannot reach it", name)
			} else {
				host, port := splitHostPort(t, name, pa)
				_, lport := splitHostPort(t, name, pl)
				if host != name && host != s.Hostname {
					t.Errorf("%s: --push-advertise=%s names another host than the service", name, pa)
				}
				if port != lport {
					t.Errorf("%s: --push-advertise=%s, but the push endpoint listens on %s", name, pa, pl)
				}
			}
		}
		if brokers, ok := s.flag("brokers"); ok {
			seeds := strings.Split(brokers, ",")
			if len(seeds) != len(kafkas) {
				t.Errorf("%s: --brokers=%s: list all %d brokers, so that any one may be down at start", name, brokers, len(kafkas))
			}
			for _, b := range seeds {
				host, port := splitHostPort(t, name, b)
				k, ok := kafkas[host]
				if !ok {
					t.Errorf("%s: broker %s is no Kafka service", name, b)
					continue
				}
				if !slices.Contains(k.advertised, net.JoinHostPort(host, port)) {
					t.Errorf("%s: broker %s is not an address %s advertises (%v)", name, b, host, k.advertised)
				}
				if s.DependsOn[host] != "service_healthy" {
					t.Errorf("%s does not wait for %s to be healthy", name, host)
				}
			}
		}
		if hosts, ok := s.flag("cassandra"); ok {
			for _, h := range strings.Split(hosts, ",") {
				host, port, err := net.SplitHostPort(h)
				if err != nil {
					host, port = h, "9042"
				}
				cs, ok := c.Services[host]
				if !ok || !strings.HasPrefix(cs.Image, "cassandra:") {
					t.Errorf("%s: --cassandra names %s, which is no Cassandra service", name, host)
				} else if port != "9042" {
					t.Errorf("%s: --cassandra=%s: Cassandra's native port is 9042", name, h)
				}
				if s.role() == "migrate" && s.DependsOn[host] != "service_healthy" {
					t.Errorf("migrate does not wait for %s to be healthy", host)
				}
			}
		}
	}

	// The secrets: one value per secret across the roles, long enough for
	// the binary (connector.NewGateway: token secret >= 32 bytes; push
	// secret and API key >= 16).
	secrets := map[string]int{"PARLEY_TOKEN_SECRET": 32, "PARLEY_API_KEY": 16, "PARLEY_PUSH_SECRET": 16}
	for k, min := range secrets {
		values := map[string]bool{}
		for _, name := range parley {
			if v, ok := c.Services[name].Environment[k]; ok {
				values[v] = true
				if len(v) < min {
					t.Errorf("%s: the default of %s is %d bytes, parley needs at least %d", name, k, len(v), min)
				}
			}
		}
		if len(values) != 1 {
			t.Errorf("%s: %d different values across the services, want one", k, len(values))
		}
		if _, ok := vars[k]; !ok {
			t.Errorf("%s is not taken from a variable (${%s:-default})", k, k)
		}
	}

	// Images are pinned, volumes declared, bind-mounted files present.
	for name, s := range c.Services {
		if s.Build == nil {
			_, tag, ok := strings.Cut(s.Image, ":")
			if !ok || tag == "latest" || !strings.ContainsAny(tag, "0123456789") {
				t.Errorf("%s: image %q is not pinned to a version", name, s.Image)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s mounts volume %s, which the file does not declare", name, src)
			}
		}
	}

	checkNginx(t, c)
	checkPrometheus(t, c)
	checkGrafana(t, c)
}

func splitHostPort(t *testing.T, service, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %v", service, err)
	}
	return host, port
}

// kafka is what the tests check of one broker.
type kafka struct {
	nodeID     string
	advertised []string
}

// kafkaServices checks the KRaft cluster and returns its brokers by
// service name.
func (c *compose) kafkaServices(t *testing.T) map[string]kafka {
	t.Helper()
	out := map[string]kafka{}
	var names []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "apache/kafka:") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) != 3 {
		t.Fatalf("%d Kafka services (%v), want 3", len(names), names)
	}
	var voters []string
	same := map[string]string{}
	for _, name := range names {
		s := c.Services[name]
		env := s.Environment
		for _, k := range []string{"CLUSTER_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_PROCESS_ROLES", "KAFKA_LISTENERS"} {
			if v, ok := same[k]; ok && v != env[k] {
				t.Errorf("%s: %s=%q differs from the other brokers' %q", name, k, env[k], v)
			}
			same[k] = env[k]
		}
		id := env["KAFKA_NODE_ID"]
		for other, k := range out {
			if k.nodeID == id {
				t.Errorf("%s and %s share KAFKA_NODE_ID %s", name, other, id)
			}
		}
		listeners := parseListeners(t, name, env["KAFKA_LISTENERS"])
		advertised := parseListeners(t, name, env["KAFKA_ADVERTISED_LISTENERS"])
		protocols := map[string]string{}
		for _, p := range strings.Split(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], ",") {
			l, proto, _ := strings.Cut(p, ":")
			protocols[l] = proto
		}
		ctrl := env["KAFKA_CONTROLLER_LISTENER_NAMES"]
		for l := range listeners {
			if protocols[l] == "" {
				t.Errorf("%s: listener %s has no security protocol", name, l)
			}
		}
		if _, ok := listeners[ctrl]; !ok || !strings.Contains(env["KAFKA_PROCESS_ROLES"], "controller") {
			t.Errorf("%s: no controller listener %q in %q, or not a controller", name, ctrl, env["KAFKA_LISTENERS"])
		}
		if _, ok := listeners[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]; !ok {
			t.Errorf("%s: the inter-broker listener %q is not in KAFKA_LISTENERS", name, env["KAFKA_INTER_BROKER_LISTENER_NAME"])
		}
		_, ctrlPort, _ := net.SplitHostPort(listeners[ctrl])
		voters = append(voters, id+"@"+net.JoinHostPort(name, ctrlPort))
		published := s.publishedPorts()
		var addrs []string
		for l, a := range advertised {
			host, port, _ := net.SplitHostPort(a)
			_, lport, _ := net.SplitHostPort(listeners[l])
			switch {
			case l == ctrl:
				t.Errorf("%s advertises its controller listener", name)
			case host == name || host == s.Hostname:
				// Reached on the compose network at the listener's own port.
				if port != lport {
					t.Errorf("%s: %s is advertised as %s but listens on port %s", name, l, a, lport)
				}
				addrs = append(addrs, a)
			case host == "localhost" || host == "127.0.0.1":
				// Reached from the host through a published port.
				if published[lport] != port {
					t.Errorf("%s: %s is advertised as %s, but container port %s is published as %q", name, l, a, lport, published[lport])
				}
			default:
				t.Errorf("%s: %s is advertised as %s, which nobody resolves", name, l, a)
			}
		}
		if s.Healthcheck == nil {
			t.Errorf("%s has no healthcheck: the roles wait for the brokers to be healthy", name)
		}
		for k, want := range map[string]string{
			"KAFKA_DEFAULT_REPLICATION_FACTOR":               "3",
			"KAFKA_MIN_INSYNC_REPLICAS":                      "2",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "3",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "2",
		} {
			if env[k] != want {
				t.Errorf("%s: %s=%q, want %s", name, k, env[k], want)
			}
		}
		out[name] = kafka{nodeID: id, advertised: addrs}
	}
	slices.SortFunc(voters, func(a, b string) int {
		x, _ := strconv.Atoi(a[:strings.Index(a, "@")])
		y, _ := strconv.Atoi(b[:strings.Index(b, "@")])
		return x - y
	})
	if got := same["KAFKA_CONTROLLER_QUORUM_VOTERS"]; got != strings.Join(voters, ",") {
		t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS=%q, want %q", got, strings.Join(voters, ","))
	}
	return out
}

// parseListeners parses "NAME://host:port,…" into name → host:port.
func parseListeners(t *testing.T, service, s string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(l, "://")
		if !ok {
			t.Errorf("%s: listener %q is not NAME://host:port", service, l)
			continue
		}
		m[name] = addr
	}
	return m
}

// mountOf returns the host path a service mounts at target.
func mountOf(s service, target string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// checkNginx: nginx mounts docker/nginx.conf, listens on the port it
// publishes, proxies WebSocket upgrades, and its upstream is every
// connector at its --listen port.
func checkNginx(t *testing.T, c *compose) {
	s, ok := c.Services["nginx"]
	if !ok {
		t.Error("no nginx service")
		return
	}
	if src := mountOf(s, "/etc/nginx/nginx.conf"); src != "./nginx.conf" {
		t.Errorf("nginx mounts %q at /etc/nginx/nginx.conf, want ./nginx.conf", src)
	}
	b, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := regexp.MustCompile(`(?m)#.*$`).ReplaceAllString(string(b), "")
	listens := regexp.MustCompile(`(?m)^\s*listen\s+(?:[^\s;]*:)?(\d+)[^;]*;`).FindAllStringSubmatch(conf, -1)
	if len(listens) != 1 {
		t.Errorf("nginx.conf has %d listen directives, want the one public port", len(listens))
	}
	for _, l := range listens {
		if _, ok := s.publishedPorts()[l[1]]; !ok {
			t.Errorf("nginx listens on %s but publishes %v", l[1], s.Ports)
		}
	}
	if len(s.Ports) != 1 {
		t.Errorf("nginx publishes %v, want one port", s.Ports)
	}
	upstream := regexp.MustCompile(`(?s)upstream\s+(\w+)\s*\{(.*?)\}`).FindStringSubmatch(conf)
	if upstream == nil {
		t.Fatal("nginx.conf has no upstream")
	}
	servers := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)`).FindAllStringSubmatch(upstream[2], -1) {
		host, port := splitHostPort(t, "nginx", m[1])
		servers[host] = true
		cs, ok := c.Services[host]
		if !ok || cs.role() != "connector" {
			t.Errorf("nginx upstream %s is no connector service", m[1])
			continue
		}
		if l, _ := cs.flag("listen"); !strings.HasSuffix(l, ":"+port) {
			t.Errorf("nginx upstream %s, but %s has --listen=%s", m[1], host, l)
		}
		if s.DependsOn[host] == "" {
			t.Errorf("nginx does not depend on %s", host)
		}
	}
	for _, name := range c.parleyServices() {
		if c.Services[name].role() == "connector" && !servers[name] {
			t.Errorf("connector %s is not in nginx's upstream", name)
		}
	}
	ws := regexp.MustCompile(`(?s)location\s+=\s+/v1/ws\s*\{(.*?)\}`).FindStringSubmatch(conf)
	if ws == nil {
		t.Fatal("nginx.conf has no location = /v1/ws")
	}
	for _, want := range []string{
		"proxy_pass http://" + upstream[1] + ";",
		"proxy_set_header Upgrade $http_upgrade;",
		"proxy_set_header Connection $connection_upgrade;",
		"proxy_set_header Host $http_host;",
		"proxy_read_timeout",
	} {
		if !strings.Contains(ws[1], want) {
			t.Errorf("nginx.conf: location = /v1/ws lacks %q", want)
		}
	}
	if !strings.Contains(conf, "proxy_http_version 1.1;") {
		t.Error("nginx.conf: WebSocket upgrades need proxy_http_version 1.1")
	}
	api := regexp.MustCompile(`(?s)location\s+/\s*\{(.*?)\}`).FindStringSubmatch(conf)
	if api == nil || !strings.Contains(api[1], "proxy_pass http://"+upstream[1]+";") {
		t.Error("nginx.conf: location / does not proxy the HTTP API to the connectors")
	}
}

// promConfig is the part of prometheus.yml the tests read.
type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func loadPrometheus(t *testing.T) *promConfig {
	t.Helper()
	b, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var p promConfig
	if err := yaml.Unmarshal(b, &p); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	return &p
}

// checkPrometheus: Prometheus reads docker/prometheus.yml, which scrapes
// every parley role but migrate once, at its --admin-listen port, in a job
// named after the role.
func checkPrometheus(t *testing.T, c *compose) {
	s, ok := c.Services["prometheus"]
	if !ok {
		t.Error("no prometheus service")
		return
	}
	config := "/etc/prometheus/prometheus.yml"
	for _, a := range s.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			config = v
		}
	}
	if src := mountOf(s, config); src != "./prometheus.yml" {
		t.Errorf("prometheus mounts %q at its config file %s, want ./prometheus.yml", src, config)
	}
	p := loadPrometheus(t)
	scraped := map[string]int{}
	for _, sc := range p.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s; the admin endpoint serves /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port := splitHostPort(t, "prometheus.yml", target)
				ts, ok := c.Services[host]
				if !ok || ts.Build == nil {
					t.Errorf("job %s: target %s is no parley service", sc.JobName, target)
					continue
				}
				scraped[host]++
				if ts.role() != sc.JobName {
					t.Errorf("job %s scrapes %s, which runs parley %s", sc.JobName, host, ts.role())
				}
				if a, _ := ts.flag("admin-listen"); !strings.HasSuffix(a, ":"+port) {
					t.Errorf("job %s scrapes %s, but %s has --admin-listen=%s", sc.JobName, target, host, a)
				}
			}
		}
	}
	for _, name := range c.parleyServices() {
		if c.Services[name].role() != "migrate" && scraped[name] != 1 {
			t.Errorf("prometheus.yml scrapes %s %d times, want once", name, scraped[name])
		}
	}
}

// grafanaDatasources is the provisioned datasources file.
type grafanaDatasources struct {
	Datasources []struct {
		Name string `yaml:"name"`
		UID  string `yaml:"uid"`
		Type string `yaml:"type"`
		URL  string `yaml:"url"`
	} `yaml:"datasources"`
}

type grafanaProviders struct {
	Providers []struct {
		Type    string `yaml:"type"`
		Options struct {
			Path string `yaml:"path"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// prometheusUID returns the uid of the provisioned Prometheus datasource
// and its URL.
func prometheusUID(t *testing.T) (uid, url string) {
	t.Helper()
	b, err := os.ReadFile("grafana/provisioning/datasources/prometheus.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds grafanaDatasources
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatalf("datasources: %v", err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].UID == "" {
		t.Fatalf("want one Prometheus datasource with a uid, got %+v", ds.Datasources)
	}
	return ds.Datasources[0].UID, ds.Datasources[0].URL
}

// checkGrafana: Grafana mounts the provisioning and the dashboards where
// the provisioning files say, and its datasource is the prometheus service.
func checkGrafana(t *testing.T, c *compose) {
	s, ok := c.Services["grafana"]
	if !ok {
		t.Error("no grafana service")
		return
	}
	if src := mountOf(s, "/etc/grafana/provisioning"); src != "./grafana/provisioning" {
		t.Errorf("grafana mounts %q at /etc/grafana/provisioning, want ./grafana/provisioning", src)
	}
	b, err := os.ReadFile("grafana/provisioning/dashboards/parley.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var dp grafanaProviders
	if err := yaml.Unmarshal(b, &dp); err != nil {
		t.Fatalf("dashboard providers: %v", err)
	}
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("want one file provider of dashboards, got %+v", dp.Providers)
	}
	dir := dp.Providers[0].Options.Path
	if src := mountOf(s, dir); src != "./grafana/dashboards" {
		t.Errorf("grafana mounts %q at %s (the dashboards' path), want ./grafana/dashboards", src, dir)
	}
	if home := s.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		rel, ok := strings.CutPrefix(home, dir+"/")
		if _, err := os.Stat(filepath.Join("grafana/dashboards", rel)); !ok || err != nil {
			t.Errorf("the home dashboard %s is not one of the mounted dashboards", home)
		}
	}
	_, url := prometheusUID(t)
	hostPort, ok := strings.CutPrefix(url, "http://")
	if !ok {
		t.Fatalf("datasource URL %q is not http://host:port", url)
	}
	host, port := splitHostPort(t, "datasource", hostPort)
	ps, ok := c.Services[host]
	if !ok {
		t.Fatalf("the datasource names %s, which is no service", host)
	}
	listen := ":9090"
	for _, a := range ps.Command {
		if v, ok := strings.CutPrefix(a, "--web.listen-address="); ok {
			listen = v
		}
	}
	if !strings.HasSuffix(listen, ":"+port) || !slices.Contains(ps.containerPorts(), port) {
		t.Errorf("the datasource is %s, but %s listens on %s and exposes %v", url, host, listen, ps.containerPorts())
	}
}
