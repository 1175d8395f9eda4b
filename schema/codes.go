package schema

import parleyv1 "github.com/parley-im/parley/schema/parley/v1"

// Error codes of the client protocol and the HTTP API (PROTOCOL.md §2).
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// ErrorCode returns the client error code for a rejection reason.
func ErrorCode(r parleyv1.Reason) string {
	switch r {
	case parleyv1.Reason_REASON_CONV_NOT_FOUND, parleyv1.Reason_REASON_TARGET_NOT_FOUND:
		return CodeNotFound
	case parleyv1.Reason_REASON_NOT_MEMBER, parleyv1.Reason_REASON_NOT_AUTHOR,
		parleyv1.Reason_REASON_NOT_OWNER, parleyv1.Reason_REASON_TARGET_EXPIRED:
		return CodeForbidden
	case parleyv1.Reason_REASON_TOO_MANY_MEMBERS, parleyv1.Reason_REASON_TOO_LARGE:
		return CodeTooLarge
	case parleyv1.Reason_REASON_MALFORMED, parleyv1.Reason_REASON_CONV_EXISTS,
		parleyv1.Reason_REASON_TARGET_REVOKED, parleyv1.Reason_REASON_DIRECT_FIXED:
		return CodeBadRequest
	default:
		return CodeInternal
	}
}
