package schema

import (
	"encoding/json"
	"testing"
)

// TestParseJSONInt: the integers JSON writes, up to 18 digits, are read
// as encoding/json reads them, with where they end; anything else is left.
func TestParseJSONInt(t *testing.T) {
	for in, end := range map[string]int{
		`0`: 1, `-0`: 2, `7,`: 1, `-42}`: 3, `123456789012345678`: 18, `-999999999999999999 `: 19,
	} {
		n, e, ok := ParseJSONInt([]byte(in), 0)
		var want int64
		if err := json.Unmarshal([]byte(in[:end]), &want); err != nil || !ok || n != want || e != end {
			t.Errorf("ParseJSONInt(%q) = %d, %d, %v; want %d, %d (%v)", in, n, e, ok, want, end, err)
		}
	}
	for _, in := range []string{``, `-`, `x`, `01`, `-01`, `1.5`, `1e3`, `1E3`, `1234567890123456789`, `+1`, ` 1`} {
		if n, e, ok := ParseJSONInt([]byte(in), 0); ok {
			t.Errorf("ParseJSONInt(%q) = %d, %d; want it left", in, n, e)
		}
	}
	if n, e, ok := ParseJSONInt([]byte(`{"seq":12}`), 7); !ok || n != 12 || e != 9 {
		t.Errorf("from the middle: %d, %d, %v", n, e, ok)
	}
}
