package schema

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONDepth(t *testing.T) {
	for in, want := range map[string]int{
		`1`:                          0,
		`"x"`:                        0,
		`"[[[{{{"`:                   0,
		`"a\"[[[\\"`:                 0,
		`[]`:                         1,
		`{"a":1}`:                    1,
		`[[],[]]`:                    2,
		`{"a":[{"b":"]]]"}],"c":{}}`: 3,
		`["\\",[["\"]"]]]`:           3,
		`["\\\"]"]`:                  1,
		`"\`:                         0,
		strings.Repeat("[", 100) + strings.Repeat("]", 100): 100,
	} {
		if got := JSONDepth([]byte(in)); got != want {
			t.Errorf("JSONDepth(%.40q) = %d, want %d", in, got, want)
		}
	}
}

// jsonDepth is JSONDepth a byte at a time, as it was first written: the
// reference FuzzJSONDepth holds it to.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// FuzzJSONDepth holds JSONDepth to jsonDepth's answers on any text.
func FuzzJSONDepth(f *testing.F) {
	for _, s := range []string{`[]`, `{"a":[{"b":"]]]"}],"c":{}}`, `["\\",[["\"]"]]]`, `"\\\"[`, `"\`, `"`, `[["a\\\\"]]`, `]]][[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := JSONDepth(b), jsonDepth(b); got != want {
			t.Fatalf("JSONDepth(%q) = %d, want %d", b, got, want)
		}
	})
}

// FuzzValidJSON holds ValidJSON to encoding/json.Valid's answers.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		``, ` `, `1`, `-0`, `1e5`, `01`, `1.`, `.1`, `"a"`, `"\ud800"`, `"\udc00\ud800"`, `"\ud83d\ude00"`,
		"\"\xff\"", "\"\xed\xa0\x80\"", `{"a":1,"a":2}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a" 1}`, `nul`, `null `,
		` {"a":[true,false,null]} `, `{} {}`, `"\x"`, `"\u12"`, "\"a\tb\"", "\ufeff1", `NaN`, `[[[[[[[[[[]]]]]]]]]]`,
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001), strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := ValidJSON(b), json.Valid(b); got != want {
			t.Fatalf("ValidJSON(%q) = %v, json.Valid %v", b, got, want)
		}
	})
}
