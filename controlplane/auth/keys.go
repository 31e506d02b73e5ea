package auth

import (
	"encoding/hex"

	"github.com/outposthq/outpost/controlplane/store"
)

// Key prefixes of the objects this package keeps in etcd. Each ends in '/'.
const (
	JoinTokensPrefix  = store.Root + "jointokens/"
	CredentialsPrefix = store.Root + "credentials/"
	RevokedPrefix     = store.Root + "revoked/"
)

// joinTokenKey returns /outpost/jointokens/<hex hash>.
func joinTokenKey(hash [32]byte) string { return JoinTokensPrefix + hex.EncodeToString(hash[:]) }

// credentialKey returns /outpost/credentials/<serial>.
func credentialKey(serial string) string { return CredentialsPrefix + serial }

// revokedKey returns /outpost/revoked/<serial>.
func revokedKey(serial string) string { return RevokedPrefix + serial }

// validSerial reports whether s is a serial as pki.SerialString writes
// it: lower-case hex without leading zeros, at most 40 digits (RFC 5280's
// 20 bytes). User input goes into keys only after this check.
func validSerial(s string) bool {
	if s == "" || len(s) > 40 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
