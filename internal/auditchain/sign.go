package auditchain

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// KeyID names a public key: the hex SHA-256 of its DER
// SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("audit key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// Sign sets c's key_id and signs c with key (the control plane's CA key).
func Sign(c *outpostv1.AuditCheckpoint, key crypto.Signer) error {
	id, err := KeyID(key.Public())
	if err != nil {
		return err
	}
	c.KeyId = id
	c.Signature = nil
	msg, err := EncodeCheckpoint(c)
	if err != nil {
		return err
	}
	var sig []byte
	switch key.Public().(type) {
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey, *rsa.PublicKey:
		sum := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, sum[:], crypto.SHA256)
	default:
		return fmt.Errorf("sign audit checkpoint: unsupported key type %T", key.Public())
	}
	if err != nil {
		return fmt.Errorf("sign audit checkpoint: %w", err)
	}
	c.Signature = sig
	return nil
}

// ErrBadSignature reports a checkpoint whose signature does not verify
// with the trusted key.
var ErrBadSignature = errors.New("signature does not verify with the trusted key")

// Verify checks c's signature with pub.
func Verify(c *outpostv1.AuditCheckpoint, pub crypto.PublicKey) error {
	id, err := KeyID(pub)
	if err != nil {
		return err
	}
	if c.GetKeyId() != id {
		return fmt.Errorf("signed by key %.16s…, not the trusted key %.16s…", c.GetKeyId(), id)
	}
	msg, err := EncodeCheckpoint(c)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(msg)
	ok := false
	switch k := pub.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, c.GetSignature())
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, sum[:], c.GetSignature())
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], c.GetSignature()) == nil
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}
