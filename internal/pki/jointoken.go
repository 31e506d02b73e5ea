package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// JoinTokenPrefix starts every join token, so secret scanners and people
// recognize one.
const JoinTokenPrefix = "opjt_"

// joinSecretLen is the number of random bytes in a join token.
const joinSecretLen = 32

// JoinToken is a gateway's one-time ticket to a certificate:
// "opjt_<secret>.<CA fingerprint>", both parts unpadded base64url. The
// control plane stores only the secret's SHA-256; the fingerprint is not
// secret and lets the gateway verify the control plane (JoinTLSConfig).
//
// String and GoString redact the secret, so logging a JoinToken by mistake
// leaks nothing; Encode returns the real token.
type JoinToken struct {
	secret        [joinSecretLen]byte
	CAFingerprint [32]byte
}

// NewJoinToken returns a token with a fresh random secret.
func NewJoinToken(caFingerprint [32]byte) (JoinToken, error) {
	t := JoinToken{CAFingerprint: caFingerprint}
	if _, err := rand.Read(t.secret[:]); err != nil {
		return JoinToken{}, fmt.Errorf("pki: join token: %w", err)
	}
	return t, nil
}

var b64 = base64.RawURLEncoding.Strict()

// Encode returns the token as the gateway is given it. The result is a
// secret: never log it.
func (t JoinToken) Encode() string {
	return JoinTokenPrefix + b64.EncodeToString(t.secret[:]) + "." + b64.EncodeToString(t.CAFingerprint[:])
}

// String returns the token with its secret redacted.
func (t JoinToken) String() string { return JoinTokenPrefix + "<redacted>" }

// GoString returns the token with its secret redacted.
func (t JoinToken) GoString() string { return "pki.JoinToken{<redacted>}" }

// Hash returns the SHA-256 of the secret, which is all the control plane
// stores.
func (t JoinToken) Hash() [32]byte { return sha256.Sum256(t.secret[:]) }

// ID returns the token's public id: the first 16 hex digits of Hash.
func (t JoinToken) ID() string { return JoinTokenIDOfHash(t.Hash()) }

// JoinTokenIDOfHash returns the public id of the token with this hash.
func JoinTokenIDOfHash(h [32]byte) string { return hex.EncodeToString(h[:8]) }

// ParseJoinToken parses an encoded join token. Errors never quote the input.
func ParseJoinToken(s string) (JoinToken, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), JoinTokenPrefix)
	if !ok {
		return JoinToken{}, fmt.Errorf("join token does not start with %q", JoinTokenPrefix)
	}
	secret, fp, ok := strings.Cut(rest, ".")
	if !ok {
		return JoinToken{}, errors.New("join token has no CA fingerprint")
	}
	var t JoinToken
	if err := decodeExact(t.secret[:], secret); err != nil {
		return JoinToken{}, fmt.Errorf("join token secret: %w", err)
	}
	if err := decodeExact(t.CAFingerprint[:], fp); err != nil {
		return JoinToken{}, fmt.Errorf("join token CA fingerprint: %w", err)
	}
	return t, nil
}

func decodeExact(dst []byte, s string) error {
	if b64.EncodedLen(len(dst)) != len(s) {
		return fmt.Errorf("want %d characters, have %d", b64.EncodedLen(len(dst)), len(s))
	}
	n, err := b64.Decode(dst, []byte(s))
	if err != nil || n != len(dst) {
		return errors.New("not unpadded base64url")
	}
	return nil
}
