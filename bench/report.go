package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// WriteText writes res for people to read.
func WriteText(w io.Writer, res *Result) {
	status := "ok"
	if !res.OK {
		status = fmt.Sprintf("FAILED (%d errors)", res.ErrorCount)
	}
	fmt.Fprintf(w, "parley bench %s: %s\n", res.Scenario, status)
	fmt.Fprintf(w, "  machine   %d cores, %s, %d MiB, %s\n", res.Machine.Cores, res.Machine.CPU, res.Machine.MemoryMiB, res.Machine.Go)
	if sp := res.Machine.Speed; sp != nil {
		fmt.Fprintf(w, "  speed     %s\n", sp.describe())
	}
	fmt.Fprintf(w, "  params    %s\n", res.Params.describe())
	fmt.Fprintf(w, "  result    %s %s (%d in %.2fs)\n", human(res.Rate), res.Unit, res.Count, res.Seconds)
	if l := res.Latency; l != nil {
		fmt.Fprintf(w, "  latency   %s\n", l.describe())
	}
	if l := res.AckLatency; l != nil {
		fmt.Fprintf(w, "  ack       %s\n", l.describe())
	}
	if tr := res.Trend; tr != nil {
		fmt.Fprintf(w, "  trend     %s\n", tr.describe(res.Unit))
	}
	if c := res.CPU; c != nil {
		fmt.Fprintf(w, "  cpu       server %.2f cores, bench %.2f, other %.2f, stolen %.2f\n", c.Server, c.Bench, c.Other, c.Stolen)
	}
	for _, k := range slices.Sorted(maps.Keys(res.Counts)) {
		fmt.Fprintf(w, "  %-28s %d\n", k, res.Counts[k])
	}
	for _, k := range slices.Sorted(maps.Keys(res.Figures)) {
		fmt.Fprintf(w, "  %-28s %.2f\n", k, res.Figures[k])
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if n := res.ErrorCount - int64(len(res.Errors)); n > 0 {
		fmt.Fprintf(w, "  … and %d more errors\n", n)
	}
}

func (sp *Speed) describe() string {
	return fmt.Sprintf("loopback round trip %.1fµs, SHA-256 %.0f MB/s on one core", sp.LoopbackRTTMicros, sp.SHA256MBPerSec)
}

func (l *Latency) describe() string {
	return fmt.Sprintf("p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  (%d samples)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
}

func (p Params) describe() string {
	var parts []string
	add := func(name string, v any, set bool) {
		if set {
			parts = append(parts, fmt.Sprintf("%s=%v", name, v))
		}
	}
	add("target", p.Target, p.Target != "")
	add("clients", p.Clients, p.Clients > 0)
	add("members", p.Members, p.Members > 0)
	add("senders", p.Senders, p.Senders > 0)
	add("rate", p.Rate, p.Rate > 0)
	add("window", p.Window, p.Window > 0 && p.Rate == 0)
	add("duration", p.Duration, p.Duration != "")
	add("events", p.Events, p.Events > 0)
	add("convs", p.Convs, p.Convs > 0)
	add("body", p.BodySize, p.BodySize > 0)
	add("partitions", p.Partitions, p.Partitions > 0)
	add("server-args", p.ServerArgs, p.ServerArgs != "")
	add("server-env", p.ServerEnv, p.ServerEnv != "")
	add("processes", p.Processes, p.Processes > 0)
	return strings.Join(parts, " ")
}

// MarkdownRow is res as a row of the table MarkdownHeader starts.
func MarkdownRow(res *Result) string {
	lat := "–"
	if l := res.Latency; l != nil {
		lat = fmt.Sprintf("%.1f / %.1f / %.1f / %.1f", l.P50, l.P90, l.P99, l.P999)
	}
	cpu := "–"
	if c := res.CPU; c != nil {
		cpu = fmt.Sprintf("%.2f / %.2f / %.2f", c.Server, c.Bench, c.Stolen)
	}
	ok := "ok"
	if !res.OK {
		ok = fmt.Sprintf("**%d errors**", res.ErrorCount)
	}
	var extra []string
	for _, k := range slices.Sorted(maps.Keys(res.Figures)) {
		extra = append(extra, fmt.Sprintf("%s %s", k, human(res.Figures[k])))
	}
	speed := "–"
	if sp := res.Machine.Speed; sp != nil {
		speed = fmt.Sprintf("%.1f / %.0f", sp.LoopbackRTTMicros, sp.SHA256MBPerSec)
	}
	result := human(res.Rate) + " " + res.Unit
	if tr := res.Trend; tr != nil && !tr.Sustained {
		result += fmt.Sprintf(" **not sustained** (p50 %.0f → %.0f ms; %s while sending)", tr.EarlyP50, tr.LateP50, human(tr.WhileSending))
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |", res.Scenario, res.Params.describe(), result, lat, cpu, strings.Join(extra, ", "), speed, ok)
}

// MarkdownHeader starts a table of MarkdownRow rows.
const MarkdownHeader = "| scenario | parameters | result | latency p50 / p90 / p99 / p99.9 (ms) | CPU server / bench / stolen (cores) | other figures | machine speed: loopback round trip (µs) / SHA-256 (MB/s) | checks |\n|---|---|---|---|---|---|---|---|"

// human prints a number with thousands separators, or two decimals when
// it is small.
func human(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.2f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
