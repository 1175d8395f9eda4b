package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestSignVerify(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	now := time.Unix(1_800_000_000, 0)
	tok, err := Sign(secret, "alice", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := Verify(secret, tok, now.Add(time.Minute)); err != nil || u != "alice" {
		t.Fatalf("Verify = %q, %v", u, err)
	}
	bad := map[string]func() (string, []byte, time.Time){
		"expired":      func() (string, []byte, time.Time) { return tok, secret, now.Add(2 * time.Hour) },
		"wrong secret": func() (string, []byte, time.Time) { return tok, []byte(strings.Repeat("x", 32)), now },
		"alg none": func() (string, []byte, time.Time) {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s, secret, now
		},
		"no expiry": func() (string, []byte, time.Time) {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice"}).SignedString(secret)
			return s, secret, now
		},
		"bad subject": func() (string, []byte, time.Time) {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "a/b", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(secret)
			return s, secret, now
		},
		"garbage": func() (string, []byte, time.Time) { return "not.a.jwt", secret, now },
	}
	for name, mk := range bad {
		tok, sec, at := mk()
		if _, err := Verify(sec, tok, at); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Verify error = %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := Sign(secret, "bad user", time.Hour, now); err == nil {
		t.Error("Sign accepted an invalid user id")
	}
	if _, err := Sign(secret[:8], "alice", time.Hour, now); err == nil {
		t.Error("Sign accepted a short secret")
	}
}

func TestLoadOrCreateSecret(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateSecret(dir, "token-secret")
	if err != nil || len(a) != 64 {
		t.Fatalf("created %q, %v", a, err)
	}
	b, err := LoadOrCreateSecret(dir, "token-secret")
	if err != nil || a != b {
		t.Fatalf("reloaded %q, %v; want %q", b, err, a)
	}
}
