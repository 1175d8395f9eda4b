// Package auth issues and checks the HS256 JWTs that clients present to a
// connector, and holds the dev-mode secrets kept in a data directory.
package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-im/parley/schema"
)

// ErrInvalidToken is returned for a token that is malformed, not HS256,
// wrongly signed, expired or not yet valid, or whose subject is not a valid
// user id.
var ErrInvalidToken = errors.New("auth: invalid token")

// MaxTTL caps a token's lifetime.
const MaxTTL = 30 * 24 * time.Hour

// Sign returns an HS256 JWT for user, valid for ttl from now.
func Sign(secret []byte, user string, ttl time.Duration, now time.Time) (string, error) {
	if !schema.ValidUserID(user) {
		return "", fmt.Errorf("auth: invalid user id %q", user)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("auth: ttl must be in (0, %v]", MaxTTL)
	}
	if len(secret) < 32 {
		return "", errors.New("auth: secret shorter than 32 bytes")
	}
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// Verify checks token and returns its user. Only HS256 is accepted, in the
// canonical encoding it was issued in, and an expiry is required.
func Verify(secret []byte, token string, now time.Time) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims,
		func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		// Only the canonical base64url spelling: otherwise the unused low
		// bits of a segment's last character could change and the token
		// still verify, so one token would have several spellings.
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !schema.ValidUserID(claims.Subject) {
		return "", fmt.Errorf("%w: subject %q is not a user id", ErrInvalidToken, claims.Subject)
	}
	return claims.Subject, nil
}
