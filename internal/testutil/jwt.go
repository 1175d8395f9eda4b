package testutil

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"hash"
	"testing"
)

// RawJWT builds a JWT by hand from a header and claims: signed with
// HMAC(h, key) over "header.claims" whatever alg the header names, or with
// sig as is when h is nil. These are the forgeries a JWT library would not
// make, for tests of token verification.
func RawJWT(tb testing.TB, header, claims map[string]any, h func() hash.Hash, key []byte, sig string) string {
	tb.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	if h != nil {
		m := hmac.New(h, key)
		m.Write([]byte(input))
		sig = base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	return input + "." + sig
}
