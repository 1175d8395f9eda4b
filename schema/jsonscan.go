package schema

import "bytes"

// Pieces of JSON scanning for the decoders that read the common frames
// without a general decoder (the connector's parseFlat, the Go client's
// decodePush) and for JSONDepth.

// JSONStringEnd returns the index just after the JSON string that starts
// with the quote at b[i]: after the next quote that an even number of
// backslashes precedes (an odd number escapes it). It returns -1 if the
// string does not end. What lies between is not checked.
func JSONStringEnd(b []byte, i int) int {
	start := i + 1
	for {
		q := bytes.IndexByte(b[i+1:], '"')
		if q < 0 {
			return -1
		}
		i += 1 + q
		n := 0
		for j := i - 1; j >= start && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return i + 1
		}
	}
}

// ParseJSONInt reads the integer at b[i:] as JSON writes one: an optional
// minus, no leading zero, no fraction or exponent, and at most 18 digits,
// so that it cannot overflow. end is the index after it; ok is false for
// anything else (which a general decoder may still take, as a larger or
// fractional number).
func ParseJSONInt(b []byte, i int) (n int64, end int, ok bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	if digits := i - start; digits == 0 || digits > 18 || digits > 1 && b[start] == '0' {
		return 0, 0, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, 0, false
	}
	if neg {
		n = -n
	}
	return n, i, true
}
