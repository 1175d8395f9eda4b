package schema

import (
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
		strings.Repeat("[", 100) + strings.Repeat("]", 100): 100,
	} {
		if got := JSONDepth([]byte(in)); got != want {
			t.Errorf("JSONDepth(%.40q) = %d, want %d", in, got, want)
		}
	}
}
