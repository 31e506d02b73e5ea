package controlplane

import (
	"encoding/base64"
	"strings"
)

// Page tokens are opaque to clients: base64url of "<kind>:<position>",
// where position is the last key or sequence returned. The kind keeps a
// token of one List call from being accepted by another.

func encodeToken(kind, pos string) string {
	if pos == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + pos))
}

// decodeToken returns the position in token, "" for the empty token, and
// false when the token is not one of kind.
func decodeToken(kind, token string) (string, bool) {
	if token == "" {
		return "", true
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", false
	}
	pos, ok := strings.CutPrefix(string(b), kind+":")
	if !ok || pos == "" {
		return "", false
	}
	return pos, true
}

// pageSize applies a List call's default and maximum.
func pageSize(req int32, def, maxSize int) int {
	switch {
	case req <= 0:
		return def
	case int(req) > maxSize:
		return maxSize
	}
	return int(req)
}
