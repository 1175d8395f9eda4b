package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-im/parley/schema"
)

// Fuzz targets for the tokens a client presents (Verify, as the gateway
// calls it on every auth frame). Run with scripts/fuzz, or
// go test -run '^$' -fuzz '^FuzzVerify$' ./auth.

var (
	fuzzSecret = []byte(strings.Repeat("s", 32))
	fuzzNow    = time.Unix(1_900_000_000, 0)
)

// fuzzTokens are real tokens: valid, expired, not yet valid, wrongly
// signed, unsigned, of another algorithm.
func fuzzTokens(tb testing.TB) []string {
	sign := func(m jwt.SigningMethod, key any, c jwt.RegisteredClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	valid, err := Sign(fuzzSecret, "alice", time.Hour, fuzzNow)
	if err != nil {
		tb.Fatal(err)
	}
	exp := jwt.NewNumericDate(fuzzNow.Add(time.Hour))
	return []string{
		valid,
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: jwt.NewNumericDate(fuzzNow.Add(-time.Second))}),
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: exp, NotBefore: jwt.NewNumericDate(fuzzNow.Add(time.Hour))}),
		sign(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), jwt.RegisteredClaims{Subject: "bob", ExpiresAt: exp}),
		sign(jwt.SigningMethodHS384, fuzzSecret, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: exp}),
		sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: exp}),
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.RegisteredClaims{Subject: "not a user!", ExpiresAt: exp}),
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.RegisteredClaims{Subject: "carol"}),
	}
}

// signedWithSecret reports whether token is three base64url segments whose
// header names HS256 and whose signature is the HMAC of the first two under
// fuzzSecret, computed here without the JWT library.
func signedWithSecret(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(h, &header) != nil || header.Alg != "HS256" {
		return false
	}
	mac := hmac.New(sha256.New, fuzzSecret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)) == parts[2]
}

// FuzzVerify checks that a token verifies only if it is signed with the
// secret (by the canonical encoding of its HMAC-SHA256), names HS256, has
// not expired and names a valid user; and that Verify never panics, on
// whole tokens or cut ones.
func FuzzVerify(f *testing.F) {
	for _, tok := range fuzzTokens(f) {
		f.Add(tok)
	}
	f.Add("")
	f.Add("..")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Fuzz(func(t *testing.T, token string) {
		user, err := Verify(fuzzSecret, token, fuzzNow)
		if err == nil {
			if !signedWithSecret(token) {
				t.Fatalf("a token not signed with the secret verified as %q: %q", user, token)
			}
			if !schema.ValidUserID(user) {
				t.Fatalf("a token verified for the invalid user %q", user)
			}
		}
		for _, cut := range []string{token[:len(token)/2], strings.TrimSuffix(token, token[len(token)-min(len(token), 1):])} {
			if u, err := Verify(fuzzSecret, cut, fuzzNow); err == nil && !signedWithSecret(cut) {
				t.Fatalf("a cut token verified as %q: %q", u, cut)
			}
		}
	})
}

// FuzzVerifyMutated changes one byte of a valid token (at pos, to b), or
// cuts it, and checks that the result no longer verifies: a token is valid
// as issued, and in no other spelling.
func FuzzVerifyMutated(f *testing.F) {
	tokens := fuzzTokens(f)
	valid := tokens[0]
	if _, err := Verify(fuzzSecret, valid, fuzzNow); err != nil {
		f.Fatal(err)
	}
	for i, b := range []byte{'A', 'B', 'a', '-', '_', '.', '=', ' ', 0} {
		f.Add(uint16(i*17), b, false)
		f.Add(uint16(len(valid)-1-i), b, false)
	}
	f.Add(uint16(len(valid)-1), byte('x'), true)
	f.Fuzz(func(t *testing.T, pos uint16, b byte, cut bool) {
		p := int(pos) % len(valid)
		var mutated string
		if cut {
			mutated = valid[:p]
		} else {
			mutated = valid[:p] + string([]byte{b}) + valid[p+1:]
		}
		if mutated == valid {
			return
		}
		if u, err := Verify(fuzzSecret, mutated, fuzzNow); err == nil {
			t.Fatalf("a changed token verified as %q:\n%q\nfrom\n%q", u, mutated, valid)
		}
	})
}
