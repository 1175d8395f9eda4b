package schema

import "github.com/go-json-experiment/json/jsontext"

// MaxBodyDepth bounds how deeply the arrays and objects of a message body
// nest. Readers decode a body inside the frames that carry it (history_ok
// adds three levels), and common JSON decoders stop at a fixed depth (Go's
// at 10,000, others at 128 or 1,000); a body deeper than a decoder allows
// would make every frame holding it unreadable for that decoder.
const MaxBodyDepth = 64

// JSONDepth returns how deeply the arrays and objects of the JSON text b
// nest: 0 for a scalar, 1 for [] or {"a":1}, 2 for [[]]. It reads b once
// and allocates nothing; for text that is not valid JSON the answer is
// meaningless (check validity separately). Strings are skipped with
// bytes.IndexByte: the connector measures every body it is sent, and a
// byte at a time took it 3 ns a byte.
func JSONDepth(b []byte) int {
	depth, deepest := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			if i = JSONStringEnd(b, i) - 1; i < 0 {
				return deepest // the string does not end
			}
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		}
	}
	return deepest
}

// ValidJSON reports whether b is exactly one JSON value, by the rules of
// encoding/json.Valid: an object may repeat a name, and strings may hold
// invalid UTF-8 and unpaired surrogate escapes, so that every body the log
// already holds stays valid. It is about twice as fast as json.Valid
// (jsontext's scanner); FuzzValidJSON holds the two to the same answers.
func ValidJSON(b []byte) bool { return jsontext.Value(b).IsValid(lenientJSON...) }

var lenientJSON = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
