package schema

// MaxBodyDepth bounds how deeply the arrays and objects of a message body
// nest. Readers decode a body inside the frames that carry it (history_ok
// adds three levels), and common JSON decoders stop at a fixed depth (Go's
// at 10,000, others at 128 or 1,000); a body deeper than a decoder allows
// would make every frame holding it unreadable for that decoder.
const MaxBodyDepth = 64

// JSONDepth returns how deeply the arrays and objects of the JSON text b
// nest: 0 for a scalar, 1 for [] or {"a":1}, 2 for [[]]. It reads b once
// and allocates nothing; for text that is not valid JSON the answer is
// meaningless (check validity separately).
func JSONDepth(b []byte) int {
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
