package tap

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// The parsers below turn command-line values into a Config's fields. Each
// takes any number of values, every one a comma-separated list, so that a
// flag can be given several times or once with a list.

// splitList returns the non-empty, trimmed items of comma-separated values.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// TypeNames returns the protocol names of the event types the schema
// defines ("message", "edit", ...), in the order of their numbers.
func TypeNames() []string {
	var nums []int32
	for n := range parleyv1.EventType_name {
		if schema.EventTypeName(parleyv1.EventType(n)) != "" {
			nums = append(nums, n)
		}
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	names := make([]string, len(nums))
	for i, n := range nums {
		names[i] = schema.EventTypeName(parleyv1.EventType(n))
	}
	return names
}

// ParseTypes parses event type names as the client protocol writes them
// (TypeNames; case does not matter).
func ParseTypes(values ...string) ([]parleyv1.EventType, error) {
	byName := make(map[string]parleyv1.EventType)
	for n := range parleyv1.EventType_name {
		if name := schema.EventTypeName(parleyv1.EventType(n)); name != "" {
			byName[name] = parleyv1.EventType(n)
		}
	}
	var out []parleyv1.EventType
	for _, s := range splitList(values) {
		t, ok := byName[strings.ToLower(s)]
		if !ok {
			return nil, fmt.Errorf("unknown event type %q: the types are %s", s, strings.Join(TypeNames(), ", "))
		}
		out = append(out, t)
	}
	return out, nil
}

// ParseConvs parses conversation ids and checks each is valid.
func ParseConvs(values ...string) ([]string, error) {
	convs := splitList(values)
	for _, c := range convs {
		if !schema.ValidConvID(c) {
			return nil, fmt.Errorf("%q is not a conversation id (1 to %d characters of A-Z a-z 0-9 _ . -)", c, schema.MaxConvIDLen)
		}
	}
	return convs, nil
}

// ParseOffsets parses start offsets: "N" starts every partition at offset
// N, "P:N" starts partition P at offset N (and overrides an "N" for it).
// Giving the same partition, or a plain N, twice is an error. No values
// give nil: no start offsets.
func ParseOffsets(values ...string) (Offsets, error) {
	items := splitList(values)
	if len(items) == 0 {
		return nil, nil
	}
	offs := make(Offsets, len(items))
	for _, it := range items {
		p, o := AllPartitions, it
		if ps, off, ok := strings.Cut(it, ":"); ok {
			n, err := strconv.ParseInt(ps, 10, 32)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%q: the partition must be a number, 0 or more (want N or PARTITION:N)", it)
			}
			p, o = int32(n), off
		}
		n, err := strconv.ParseInt(o, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q: the offset must be a number, 0 or more (want N or PARTITION:N)", it)
		}
		if _, dup := offs[p]; dup {
			if p == AllPartitions {
				return nil, fmt.Errorf("%q: an offset for every partition is given twice", it)
			}
			return nil, fmt.Errorf("%q: partition %d is given twice", it, p)
		}
		offs[p] = n
	}
	return offs, nil
}

// ParseSince parses a start time: an RFC 3339 time (fractional seconds
// allowed), or a duration as Go writes it ("90s", "15m", "2h30m"), which
// means that long before now.
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration means that long ago and must not be negative", s)
		}
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-11-21T09:30:00Z, 2026-11-21T10:30:00+01:00) nor a duration ago (90s, 15m, 2h30m)", s)
}
