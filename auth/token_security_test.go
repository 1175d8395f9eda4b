package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-im/parley/internal/testutil"
)

// TestVerifyRefusesForgeries: Verify accepts exactly an HS256 token signed
// with the secret, with an expiry in the future, no not-before in the
// future, and a user id as subject. Every other algorithm is refused, even
// one whose signature the secret makes (HS384, HS512, or an RS256/ES256
// header over an HMAC: algorithm confusion).
func TestVerifyRefusesForgeries(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(time.Hour).Unix()
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}
	good := map[string]any{"sub": "alice", "iat": now.Unix(), "exp": exp}
	signed := func(m jwt.SigningMethod, key any, claims jwt.Claims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(sub string, exp, nbf time.Time) jwt.RegisteredClaims {
		c := jwt.RegisteredClaims{Subject: sub, IssuedAt: jwt.NewNumericDate(now)}
		if !exp.IsZero() {
			c.ExpiresAt = jwt.NewNumericDate(exp)
		}
		if !nbf.IsZero() {
			c.NotBefore = jwt.NewNumericDate(nbf)
		}
		return c
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valid := signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(time.Hour), time.Time{}))
	parts := strings.Split(valid, ".")

	// The accepted forms first, so that a refusal below is the check's
	// doing and not a broken helper.
	for name, tok := range map[string]string{
		"HS256 from Sign":             mustSign(t, secret, "alice", now),
		"HS256 by hand":               testutil.RawJWT(t, hs256, good, sha256.New, secret, ""),
		"nbf in the past":             signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(time.Hour), now.Add(-time.Minute))),
		"nbf now":                     signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(time.Hour), now)),
		"no typ header":               testutil.RawJWT(t, map[string]any{"alg": "HS256"}, good, sha256.New, secret, ""),
		"unknown claims are ignored":  testutil.RawJWT(t, hs256, map[string]any{"sub": "alice", "exp": exp, "admin": true}, sha256.New, secret, ""),
		"a kid header is ignored":     testutil.RawJWT(t, map[string]any{"alg": "HS256", "kid": "../../etc/passwd"}, good, sha256.New, secret, ""),
		"a 64-character user id":      signed(jwt.SigningMethodHS256, secret, claims(strings.Repeat("a", 64), now.Add(time.Hour), time.Time{})),
		"an expiry one second ahead":  signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(time.Second), time.Time{})),
		"iat in the future (ignored)": testutil.RawJWT(t, hs256, map[string]any{"sub": "alice", "exp": exp, "iat": now.Add(time.Hour).Unix()}, sha256.New, secret, ""),
	} {
		if _, err := Verify(secret, tok, now); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}

	bad := map[string]string{
		// alg none, however spelt, with or without a signature.
		"alg none":             signed(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("alice", now.Add(time.Hour), time.Time{})),
		"alg none, by hand":    testutil.RawJWT(t, map[string]any{"alg": "none", "typ": "JWT"}, good, nil, nil, ""),
		"alg None":             testutil.RawJWT(t, map[string]any{"alg": "None"}, good, nil, nil, ""),
		"alg NONE":             testutil.RawJWT(t, map[string]any{"alg": "NONE"}, good, nil, nil, ""),
		"alg none, HS256 sig":  testutil.RawJWT(t, map[string]any{"alg": "none"}, good, sha256.New, secret, ""),
		"no alg":               testutil.RawJWT(t, map[string]any{"typ": "JWT"}, good, sha256.New, secret, ""),
		"alg empty":            testutil.RawJWT(t, map[string]any{"alg": ""}, good, sha256.New, secret, ""),
		"alg hs256 lowercase":  testutil.RawJWT(t, map[string]any{"alg": "hs256"}, good, sha256.New, secret, ""),
		"HS256 without a sig":  parts[0] + "." + parts[1] + ".",
		"HS256, two segments":  parts[0] + "." + parts[1],
		"HS256, four segments": valid + ".x",
		// Other HMACs keyed with the secret itself: refused, only HS256
		// is accepted.
		"HS384 with the secret": signed(jwt.SigningMethodHS384, secret, claims("alice", now.Add(time.Hour), time.Time{})),
		"HS512 with the secret": signed(jwt.SigningMethodHS512, secret, claims("alice", now.Add(time.Hour), time.Time{})),
		// Algorithm confusion: an asymmetric header over an HMAC made with
		// the secret (as if it were the public key), and genuine
		// asymmetric signatures by keys the server never trusted.
		"RS256 header, HMAC-SHA256 by the secret": testutil.RawJWT(t, map[string]any{"alg": "RS256"}, good, sha256.New, secret, ""),
		"RS512 header, HMAC-SHA512 by the secret": testutil.RawJWT(t, map[string]any{"alg": "RS512"}, good, sha512.New, secret, ""),
		"ES256 header, HMAC-SHA256 by the secret": testutil.RawJWT(t, map[string]any{"alg": "ES256"}, good, sha256.New, secret, ""),
		"PS256 header, HMAC-SHA256 by the secret": testutil.RawJWT(t, map[string]any{"alg": "PS256"}, good, sha256.New, secret, ""),
		"EdDSA header, HMAC-SHA256 by the secret": testutil.RawJWT(t, map[string]any{"alg": "EdDSA"}, good, sha256.New, secret, ""),
		"RS256 by an RSA key":                     signed(jwt.SigningMethodRS256, rsaKey, claims("alice", now.Add(time.Hour), time.Time{})),
		"ES256 by an EC key":                      signed(jwt.SigningMethodES256, ecKey, claims("alice", now.Add(time.Hour), time.Time{})),
		// The right algorithm, the wrong key or a tampered token.
		"wrong secret":      signed(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), claims("alice", now.Add(time.Hour), time.Time{})),
		"secret prefix":     signed(jwt.SigningMethodHS256, secret[:31], claims("alice", now.Add(time.Hour), time.Time{})),
		"empty secret":      testutil.RawJWT(t, hs256, good, sha256.New, nil, ""),
		"subject swapped":   parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":`+jsonInt(exp)+`}`)) + "." + parts[2],
		"signature flipped": parts[0] + "." + parts[1] + "." + flip(parts[2]),
		// Times.
		"expired":              signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(-time.Second), time.Time{})),
		"expired long ago":     signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(-24*time.Hour), time.Time{})),
		"nbf in the future":    signed(jwt.SigningMethodHS256, secret, claims("alice", now.Add(time.Hour), now.Add(time.Minute))),
		"no exp":               signed(jwt.SigningMethodHS256, secret, claims("alice", time.Time{}, time.Time{})),
		"exp not a number":     testutil.RawJWT(t, hs256, map[string]any{"sub": "alice", "exp": "tomorrow"}, sha256.New, secret, ""),
		"exp null":             testutil.RawJWT(t, hs256, map[string]any{"sub": "alice", "exp": nil}, sha256.New, secret, ""),
		"nbf not a number":     testutil.RawJWT(t, hs256, map[string]any{"sub": "alice", "exp": exp, "nbf": "now"}, sha256.New, secret, ""),
		"no sub":               testutil.RawJWT(t, hs256, map[string]any{"exp": exp}, sha256.New, secret, ""),
		"sub empty":            signed(jwt.SigningMethodHS256, secret, claims("", now.Add(time.Hour), time.Time{})),
		"sub a number":         testutil.RawJWT(t, hs256, map[string]any{"sub": 42, "exp": exp}, sha256.New, secret, ""),
		"sub a list":           testutil.RawJWT(t, hs256, map[string]any{"sub": []string{"alice"}, "exp": exp}, sha256.New, secret, ""),
		"sub not a user id":    signed(jwt.SigningMethodHS256, secret, claims("alice bob", now.Add(time.Hour), time.Time{})),
		"sub too long":         signed(jwt.SigningMethodHS256, secret, claims(strings.Repeat("a", 65), now.Add(time.Hour), time.Time{})),
		"sub with a NUL":       signed(jwt.SigningMethodHS256, secret, claims("alice\x00", now.Add(time.Hour), time.Time{})),
		"claims not an object": testutil.RawJWT(t, hs256, nil, sha256.New, secret, ""),
		// Not a JWT at all.
		"empty":        "",
		"garbage":      "not.a.jwt",
		"one segment":  "abc",
		"the secret":   string(secret),
		"bad base64":   "!!!." + parts[1] + "." + parts[2],
		"huge garbage": strings.Repeat("A", 1<<20) + "." + parts[1] + "." + parts[2],
	}
	for name, tok := range bad {
		user, err := Verify(secret, tok, now)
		if !errors.Is(err, ErrInvalidToken) || user != "" {
			t.Errorf("%s: Verify = %q, %v; want ErrInvalidToken", name, user, err)
		}
	}
}

func mustSign(t *testing.T, secret []byte, user string, now time.Time) string {
	t.Helper()
	s, err := Sign(secret, user, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// flip changes the first character of a base64url string.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}
