package docker

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const dashboardFile = "grafana/dashboards/parley.json"

// dashboard is the part of a Grafana dashboard's JSON the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string      `json:"name"`
			Type       string      `json:"type"`
			Datasource *datasource `json:"datasource"`
			Query      any         `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	// Panels of a collapsed row.
	Panels []panel `json:"panels"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// allPanels returns the dashboard's panels, those of collapsed rows included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// query is one PromQL expression of the dashboard or of Prometheus's
// rules, with where it is, and for a label_values() variable the label
// it lists.
type query struct {
	where string
	expr  string
	label string
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// queries returns every PromQL expression of the dashboard: its panels'
// targets and its query variables.
func (d *dashboard) queries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			qs = append(qs, query{where: fmt.Sprintf("panel %q", p.Title), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, ok := v.Query.(string)
		if m, isMap := v.Query.(map[string]any); isMap {
			q, ok = m["query"].(string)
		}
		if !ok {
			t.Errorf("variable %s: query %v is not a string", v.Name, v.Query)
			continue
		}
		where := fmt.Sprintf("variable %s", v.Name)
		if m := labelValues.FindStringSubmatch(q); m != nil {
			qs = append(qs, query{where: where, expr: m[1], label: m[2]})
		} else {
			qs = append(qs, query{where: where, expr: q})
		}
	}
	return qs
}

// ruleQueries returns the expressions of the rule files prometheus.yml
// loads, if any.
func ruleQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, f := range loadPrometheus(t).RuleFiles {
		b, err := os.ReadFile(strings.TrimPrefix(f, "/etc/prometheus/"))
		if err != nil {
			t.Errorf("prometheus.yml loads %s: %v", f, err)
			continue
		}
		var rules struct {
			Groups []struct {
				Rules []struct {
					Record, Alert, Expr string
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &rules); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				qs = append(qs, query{where: fmt.Sprintf("rule %s%s in %s", r.Record, r.Alert, f), expr: r.Expr})
			}
		}
	}
	return qs
}

// TestDashboard: the dashboard is well formed, every panel queries the
// provisioned Prometheus datasource by uid, every query parses, and the
// metrics an operator needs are all on it.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "${DS_") {
		t.Error("the dashboard has import placeholders (${DS_…}): provisioning does not fill them")
	}
	d := loadDashboard(t)
	uid, _ := prometheusUID(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("the dashboard needs a uid and a title (uid %q, title %q)", d.UID, d.Title)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d; write it for a current Grafana (39 or later)", d.SchemaVersion)
	}
	ids := map[int]string{}
	var cells [][24]bool
	for _, p := range d.allPanels() {
		if other, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d is zero or also %q's", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
			continue
		}
		for len(cells) < g.Y+g.H {
			cells = append(cells, [24]bool{})
		}
		for y := g.Y; y < g.Y+g.H; y++ {
			for x := g.X; x < g.X+g.W; x++ {
				if cells[y][x] {
					t.Errorf("panel %q overlaps another at %d,%d", p.Title, x, y)
				}
				cells[y][x] = true
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != uid || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v, want the provisioned Prometheus (uid %s)", p.Title, p.Datasource, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != uid {
				t.Errorf("panel %q, query %s: datasource %+v, want uid %s", p.Title, tg.RefID, tg.Datasource, uid)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: query refId %q is empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != uid) {
			t.Errorf("variable %s: datasource %+v, want uid %s", v.Name, v.Datasource, uid)
		}
	}
	used := map[string]bool{}
	for _, q := range append(d.queries(t), ruleQueries(t)...) {
		r, err := parsePromQL(q.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		if len(r.metrics) == 0 {
			t.Errorf("%s: %q selects no metric", q.where, q.expr)
		}
		for _, m := range r.metrics {
			used[baseName(m)] = true
		}
	}
	// What an operator of the cluster looks at first: each must be plotted.
	for _, m := range []string{
		"parley_connector_connections", "parley_connector_auth_failures_total", "parley_connector_frames_total",
		"parley_connector_send_ack_seconds", "parley_connector_commands_total", "parley_sequencer_commands_total",
		"parley_sequencer_events_total", "parley_writer_events_total", "parley_fanout_events_total",
		"parley_sequencer_transaction_seconds", "parley_sequencer_transactions_total", "parley_consumer_lag",
		"parley_store_seconds", "parley_fanout_pushes_total", "parley_fanout_push_failures_total",
		"parley_records_skipped_total", "parley_kafka_produce_records_total", "parley_kafka_fetch_records_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !used[m] {
			t.Errorf("the dashboard does not plot %s", m)
		}
	}
}

// baseName strips the series suffixes of a histogram or summary.
func baseName(m string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(m, s); ok {
			return b
		}
	}
	return m
}

// promRefs is what a PromQL expression refers to.
type promRefs struct {
	// metrics are the metric names it selects, as written.
	metrics []string
	// matchers are the label matchers of each selector.
	matchers []matcher
	// grouping holds the labels of by, without, on and ignoring clauses.
	grouping []string
}

type matcher struct {
	metric, label, op, value string
}

// promqlKeywords are identifiers of PromQL that are not metric names when
// not followed by a parenthesis.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// parsePromQL finds the metric names, label matchers and grouping labels
// of a PromQL expression. It is a scanner, not a parser: enough for the
// queries a dashboard holds, with Grafana's $variables allowed.
func parsePromQL(expr string) (promRefs, error) {
	toks, err := promTokens(expr)
	if err != nil {
		return promRefs{}, err
	}
	var r promRefs
	depth := 0
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		next := func() string {
			if i+1 < len(toks) {
				return toks[i+1].text
			}
			return ""
		}
		switch {
		case tk.kind == tokIdent && next() == "(" && (tk.text == "by" || tk.text == "without" || tk.text == "on" || tk.text == "ignoring" || tk.text == "group_left" || tk.text == "group_right"):
			i += 2
			for ; i < len(toks) && toks[i].text != ")"; i++ {
				if toks[i].kind == tokIdent {
					r.grouping = append(r.grouping, toks[i].text)
				} else if toks[i].text != "," {
					return r, fmt.Errorf("unexpected %q in %s(…)", toks[i].text, tk.text)
				}
			}
			if i == len(toks) {
				return r, fmt.Errorf("unclosed %s(", tk.text)
			}
		case tk.kind == tokIdent && (next() == "(" || next() == "by" || next() == "without"):
			// A function or an aggregation; its parenthesis is counted below.
		case tk.kind == tokIdent && promqlKeywords[tk.text]:
		case tk.kind == tokIdent || tk.text == "{":
			metric := ""
			if tk.kind == tokIdent {
				metric = tk.text
				r.metrics = append(r.metrics, metric)
				if next() != "{" {
					continue
				}
				i++
			}
			// Matchers: label op "value", …
			for i++; i < len(toks) && toks[i].text != "}"; i++ {
				if toks[i].text == "," {
					continue
				}
				if i+2 >= len(toks) || toks[i].kind != tokIdent || toks[i+1].kind != tokOp || toks[i+2].kind != tokString {
					return r, fmt.Errorf("bad label matcher at %q", toks[i].text)
				}
				r.matchers = append(r.matchers, matcher{metric: metric, label: toks[i].text, op: toks[i+1].text, value: toks[i+2].value})
				i += 2
			}
			if i == len(toks) {
				return r, fmt.Errorf("unclosed {")
			}
		case tk.text == "(":
			depth++
		case tk.text == ")":
			if depth--; depth < 0 {
				return r, fmt.Errorf("unbalanced )")
			}
		case tk.text == "}":
			return r, fmt.Errorf("unbalanced }")
		}
	}
	if depth != 0 {
		return r, fmt.Errorf("unclosed (")
	}
	return r, nil
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokNumber
	tokString
	tokOp
	tokPunct
	tokRange
	tokVar
)

type token struct {
	kind  tokKind
	text  string
	value string // a string's contents
}

func promTokens(s string) ([]token, error) {
	var toks []token
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case isIdent(c, true):
			j := i + 1
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			toks = append(toks, token{kind: tokIdent, text: s[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i + 1
			// A number, or a duration (5m, 1h30m).
			for j < len(s) && (isIdent(s[j], false) && s[j] != ':' || s[j] == '.' ||
				(s[j] == '-' || s[j] == '+') && (s[j-1] == 'e' || s[j-1] == 'E')) {
				j++
			}
			toks = append(toks, token{kind: tokNumber, text: s[i:j]})
			i = j
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			var b strings.Builder
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
				j++
			}
			if j == len(s) {
				return nil, fmt.Errorf("unclosed string")
			}
			toks = append(toks, token{kind: tokString, text: s[i : j+1], value: b.String()})
			i = j + 1
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unclosed [")
			}
			toks = append(toks, token{kind: tokRange, text: s[i : i+j+1]})
			i += j + 1
		case c == '$':
			j := i + 1
			if j < len(s) && s[j] == '{' {
				k := strings.IndexByte(s[j:], '}')
				if k < 0 {
					return nil, fmt.Errorf("unclosed ${")
				}
				j += k + 1
			} else {
				for j < len(s) && isIdent(s[j], false) {
					j++
				}
			}
			toks = append(toks, token{kind: tokVar, text: s[i:j]})
			i = j
		case c == '=' || c == '!' || c == '~' || c == '<' || c == '>':
			j := i + 1
			for j < len(s) && (s[j] == '=' || s[j] == '~') {
				j++
			}
			toks = append(toks, token{kind: tokOp, text: s[i:j]})
			i = j
		case strings.IndexByte("(){},+-*/%^@", c) >= 0:
			toks = append(toks, token{kind: tokPunct, text: s[i : i+1]})
			i++
		default:
			return nil, fmt.Errorf("unexpected %q", c)
		}
	}
	return toks, nil
}

func TestParsePromQL(t *testing.T) {
	for _, c := range []struct {
		expr     string
		metrics  []string
		matchers []matcher
		grouping []string
	}{
		{expr: `go_goroutines`, metrics: []string{"go_goroutines"}},
		{
			expr:     `histogram_quantile(0.99, sum by (le, role) (rate(parley_store_seconds_bucket{job=~"$job", op="append"}[$__rate_interval])))`,
			metrics:  []string{"parley_store_seconds_bucket"},
			matchers: []matcher{{"parley_store_seconds_bucket", "job", "=~", "$job"}, {"parley_store_seconds_bucket", "op", "=", "append"}},
			grouping: []string{"le", "role"},
		},
		{
			expr:     `sum(rate(a_total{result="aborted"}[5m])) / sum(rate(a_total[5m])) > bool 0.5e-1`,
			metrics:  []string{"a_total", "a_total"},
			matchers: []matcher{{"a_total", "result", "=", "aborted"}},
		},
		{
			expr:     `max without (pod) (x) and on (instance) y{a!="b"} offset 5m`,
			metrics:  []string{"x", "y"},
			matchers: []matcher{{"y", "a", "!=", "b"}},
			grouping: []string{"pod", "instance"},
		},
		{expr: `sum(increase(z[$__range]))`, metrics: []string{"z"}},
	} {
		r, err := parsePromQL(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if !slices.Equal(r.metrics, c.metrics) || !slices.Equal(r.matchers, c.matchers) || !slices.Equal(r.grouping, c.grouping) {
			t.Errorf("%s:\n got %v %v %v\nwant %v %v %v", c.expr, r.metrics, r.matchers, r.grouping, c.metrics, c.matchers, c.grouping)
		}
	}
	for _, bad := range []string{`sum(x`, `x{a="b"`, `x{a}`, `rate(x[5m]`, `x)`, `"unclosed`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
