package signature

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// MaxBundleBytes bounds a signature bundle. cosign's key-based bundle is
// under 1 KiB; 64 KiB leaves room for a transparency-log proof.
const MaxBundleBytes = 64 << 10

// MediaType is the one bundle media type accepted: what
// `cosign sign-blob --new-bundle-format` writes.
const MediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// Reason says why a signature was refused.
type Reason int

const (
	// Missing: no bundle was given, and one is required.
	Missing Reason = iota + 1
	// Malformed: the bundle is not a v0.3 message signature by a public key.
	Malformed
	// WrongArtifact: the bundle signs other bytes than the artifact's.
	WrongArtifact
	// Untrusted: no trusted key verifies the signature.
	Untrusted
)

// Error is a refused signature. Its text names the keys that are trusted,
// so whoever reads it knows which key must sign.
type Error struct {
	Reason Reason
	// Detail says what was wrong.
	Detail string
	// Trusted are the ids of the keys that would have been accepted.
	Trusted []string
}

func (e *Error) Error() string {
	trusted := "no key is trusted"
	if len(e.Trusted) > 0 {
		trusted = "trusted keys: " + strings.Join(e.Trusted, ", ")
	}
	return fmt.Sprintf("%s (%s)", e.Detail, trusted)
}

// refuse returns the *Error for t.
func (t *Trust) refuse(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...), Trusted: t.IDs()}
}

// Required returns the error for a missing signature.
func (t *Trust) Required() error {
	return t.refuse(Missing, "signature required: sign the artifact with `cosign sign-blob --key cosign.key --bundle app.bundle --new-bundle-format --tlog-upload=false app.tar.gz` and pass the bundle")
}

// Verify checks that bundleJSON is a signature of the bytes artifact
// reads by one of t's keys, and returns that key's id. A refusal is an
// *Error; any other error is one reading the artifact.
func (t *Trust) Verify(bundleJSON []byte, artifact io.Reader) (signer string, err error) {
	if len(bundleJSON) == 0 {
		return "", t.Required()
	}
	b, msg, err := parseBundle(bundleJSON)
	if err != nil {
		return "", t.refuse(Malformed, "signature bundle: %v", err)
	}
	alg, algName := crypto.SHA256, "sha256"
	if msg.DigestAlgorithm() == "SHA2_512" {
		alg, algName = crypto.SHA512, "sha512"
	}
	h := alg.New()
	if _, err := io.Copy(h, artifact); err != nil {
		return "", fmt.Errorf("read the artifact: %w", err)
	}
	sum := h.Sum(nil)
	if !bytes.Equal(sum, msg.Digest()) {
		return "", t.refuse(WrongArtifact, "the signature bundle signs %s:%s, not this artifact (%s:%s): it was made for other bytes",
			algName, hex.EncodeToString(msg.Digest()), algName, hex.EncodeToString(sum))
	}
	if t == nil {
		return "", t.refuse(Untrusted, "the artifact is signed, but no key is trusted to check it")
	}
	for _, k := range t.keys {
		if k.digest != alg {
			continue
		}
		v, err := verify.NewVerifier(k.material(), verify.WithNoObserverTimestamps())
		if err != nil {
			return "", fmt.Errorf("verifier for key %s: %w", k.id, err)
		}
		_, err = v.Verify(b, verify.NewPolicy(verify.WithArtifactDigest(algName, sum), verify.WithKey()))
		if err == nil {
			return k.id, nil
		}
	}
	note := ""
	if alg == crypto.SHA512 {
		// cosign signs with pure Ed25519 when it uploads nothing to a
		// transparency log; only the prehashed form can be checked
		// without holding the whole artifact in memory.
		note = "; an Ed25519 signature must be Ed25519ph (SHA-512 prehash), which `cosign sign-blob --tlog-upload=false` does not make: sign with an ECDSA P-256 key (cosign generate-key-pair)"
	}
	return "", t.refuse(Untrusted, "the artifact's signature does not verify with any trusted key%s", note)
}

// material is k as sigstore-go's trusted material: the bundle's key hint
// is ignored, so each trusted key is tried for itself.
func (k key) material() root.TrustedMaterial {
	ek := root.NewExpiringKey(k.verifier, time.Time{}, time.Time{})
	return root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return ek, nil })
}

// CheckBundle parses bundleJSON as Verify does, without verifying it: a
// control plane that trusts no key for an environment still refuses a
// bundle that no gateway could accept.
func CheckBundle(bundleJSON []byte) error {
	if _, _, err := parseBundle(bundleJSON); err != nil {
		return fmt.Errorf("signature bundle: %w", err)
	}
	return nil
}

// parseBundle parses a bundle strictly and returns its message signature.
func parseBundle(data []byte) (*bundle.Bundle, verify.MessageSignatureContent, error) {
	if len(data) > MaxBundleBytes {
		return nil, nil, fmt.Errorf("%d bytes, at most %d", len(data), MaxBundleBytes)
	}
	// protojson refuses unknown fields; sigstore-go checks the structure.
	var b bundle.Bundle
	if err := b.UnmarshalJSON(data); err != nil {
		return nil, nil, fmt.Errorf("not a Sigstore bundle: %w", err)
	}
	if b.GetMediaType() != MediaType {
		return nil, nil, fmt.Errorf("media type %q, want %q (cosign sign-blob --new-bundle-format)", b.GetMediaType(), MediaType)
	}
	if b.GetVerificationMaterial().GetPublicKey() == nil {
		return nil, nil, errors.New("signed with a certificate, not a key: sign with `cosign sign-blob --key`")
	}
	sc, err := b.SignatureContent()
	if err != nil {
		return nil, nil, err
	}
	msg := sc.MessageSignatureContent()
	if msg == nil {
		return nil, nil, errors.New("an attestation (DSSE envelope), not a signature of the artifact: sign with `cosign sign-blob`")
	}
	switch msg.DigestAlgorithm() {
	case "SHA2_256", "SHA2_512":
	default:
		return nil, nil, fmt.Errorf("digest algorithm %q: want SHA2_256 or SHA2_512", msg.DigestAlgorithm())
	}
	if len(msg.Signature()) == 0 {
		return nil, nil, errors.New("no signature")
	}
	return &b, msg, nil
}
