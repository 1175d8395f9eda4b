package schema

import (
	"crypto/sha256"
	"encoding/hex"
)

// Limits on identifiers and bodies.
const (
	MaxUserIDLen = 64  // user and device ids
	MaxConvIDLen = 128 // conversation ids
	MaxCMIDLen   = 64  // client message ids
	MaxMsgIDLen  = 64  // msg_id of a command or event (a KSUID is 27)
	MaxKindLen   = 32  // message kinds
	MaxTitleLen  = 256 // group titles, in bytes
	MaxBodyLen   = 64 << 10
)

func validToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidUserID reports whether s is a valid user or device id: 1-64
// characters of [A-Za-z0-9_.-].
func ValidUserID(s string) bool { return validToken(s, MaxUserIDLen) }

// ValidNodeID reports whether s is a valid connector node id: 1-128
// characters of [A-Za-z0-9_.-] (a host name with a pid fits).
func ValidNodeID(s string) bool { return validToken(s, 128) }

// ValidConvID reports whether s is a valid conversation id: 1-128
// characters of [A-Za-z0-9_.-]. Group ids are KSUIDs and direct ids come
// from DirectConvID; both fit.
func ValidConvID(s string) bool { return validToken(s, MaxConvIDLen) }

// ValidCMID reports whether s is a valid client message id: 1-64 bytes of
// printable ASCII.
func ValidCMID(s string) bool {
	if len(s) == 0 || len(s) > MaxCMIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ValidKind reports whether s is a valid message kind: 1-32 characters of
// [A-Za-z0-9_.-].
func ValidKind(s string) bool { return validToken(s, MaxKindLen) }

// DirectConvID returns the id of the direct conversation between users a
// and b: the same whichever of them asks, and distinct for every pair.
func DirectConvID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	h := sha256.New()
	h.Write([]byte(a))
	h.Write([]byte{0}) // user ids never contain NUL, so the pair is unambiguous
	h.Write([]byte(b))
	return "d." + hex.EncodeToString(h.Sum(nil)[:20])
}
