package signature

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	sigsig "github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"sigs.k8s.io/yaml"
)

// Limits on a trust configuration.
const (
	// MaxKeys is how many keys one trust configuration may hold.
	MaxKeys = 64
	// maxKeyPEM bounds one key's PEM text; a P-256 or Ed25519 public key
	// takes about 180 bytes.
	maxKeyPEM = 8 << 10
	// maxTrustFile bounds a --trusted-keys file.
	maxTrustFile = MaxKeys * (maxKeyPEM + 256)
)

// keyIDRE is what a key id may be: it is shown in errors, `rollout get`
// and audit entries.
var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)

// KeySpec is one trusted key as a configuration file writes it.
type KeySpec struct {
	// ID names the key (the signer recorded in a rollout): 1 to 63
	// letters, digits, '.', '_', '@' or '-', starting with a letter or
	// digit.
	ID string `json:"id"`
	// PublicKey is the PEM "PUBLIC KEY" block (what cosign writes to
	// cosign.pub): ECDSA P-256 or Ed25519.
	PublicKey string `json:"public_key"`
}

// key is a parsed trusted key.
type key struct {
	id       string
	der      []byte // PKIX, to refuse the same key under two ids
	verifier sigsig.Verifier
	// digest is the bundle digest algorithm this key's signatures are
	// made over: SHA2_256 for ECDSA P-256, SHA2_512 for Ed25519 (Ed25519ph,
	// as Sigstore signs blobs with Ed25519 keys).
	digest crypto.Hash
}

// Trust is a set of named public keys. The zero value and nil trust
// nothing.
type Trust struct {
	keys []key
}

// NewTrust validates specs: at most MaxKeys, ids unique and well formed,
// each an ECDSA P-256 or Ed25519 public key, no key twice. field names
// the configuration field in errors ("environments.prod.trusted_keys").
func NewTrust(field string, specs []KeySpec) (*Trust, error) {
	if len(specs) > MaxKeys {
		return nil, fmt.Errorf("%s: %d keys, at most %d", field, len(specs), MaxKeys)
	}
	t := &Trust{}
	for i, s := range specs {
		at := fmt.Sprintf("%s[%d]", field, i)
		if !keyIDRE.MatchString(s.ID) {
			return nil, fmt.Errorf("%s.id: %q must be 1 to 63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", at, s.ID)
		}
		at = fmt.Sprintf("%s (%s)", at, s.ID)
		k, err := parseKey(s.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%s.public_key: %w", at, err)
		}
		k.id = s.ID
		for _, o := range t.keys {
			switch {
			case o.id == k.id:
				return nil, fmt.Errorf("%s.id: %q is used twice", at, k.id)
			case bytes.Equal(o.der, k.der):
				return nil, fmt.Errorf("%s.public_key: the same key as %q; one key has one id, or the signer would be ambiguous", at, o.id)
			}
		}
		t.keys = append(t.keys, k)
	}
	return t, nil
}

// parseKey parses one PEM public key.
func parseKey(text string) (key, error) {
	if len(text) > maxKeyPEM {
		return key{}, fmt.Errorf("%d bytes, at most %d", len(text), maxKeyPEM)
	}
	block, rest := pem.Decode([]byte(strings.TrimSpace(text)))
	switch {
	case block == nil:
		return key{}, errors.New(`no PEM block: paste the "-----BEGIN PUBLIC KEY-----" block (cosign.pub)`)
	case block.Type != "PUBLIC KEY":
		return key{}, fmt.Errorf("a PEM %q block, want \"PUBLIC KEY\" (a public key, never the private one)", block.Type)
	case len(bytes.TrimSpace(rest)) > 0:
		return key{}, errors.New("more than one PEM block: give each key its own entry and id")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return key{}, fmt.Errorf("not a public key: %w", err)
	}
	k := key{der: block.Bytes}
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return key{}, fmt.Errorf("ECDSA on %s: only P-256 (cosign's default) is accepted", p.Curve.Params().Name)
		}
		k.digest = crypto.SHA256
	case ed25519.PublicKey:
		k.digest = crypto.SHA512
	default:
		return key{}, fmt.Errorf("a %T key: only ECDSA P-256 and Ed25519 are accepted", pub)
	}
	k.verifier, err = sigsig.LoadDefaultVerifier(pub, options.WithED25519ph())
	if err != nil {
		return key{}, fmt.Errorf("load: %w", err)
	}
	return k, nil
}

// IDs lists the trusted key ids, in configuration order.
func (t *Trust) IDs() []string {
	if t == nil {
		return nil
	}
	ids := make([]string, len(t.keys))
	for i, k := range t.keys {
		ids[i] = k.id
	}
	return ids
}

// Empty reports whether t trusts no key.
func (t *Trust) Empty() bool { return t == nil || len(t.keys) == 0 }

// Has reports whether t trusts a key named id.
func (t *Trust) Has(id string) bool { return slices.Contains(t.IDs(), id) }

// trustFile is the --trusted-keys file.
type trustFile struct {
	Keys []KeySpec `json:"keys"`
}

// LoadTrustFile reads a gateway's --trusted-keys file, YAML:
//
//	keys:
//	  - id: ci-release
//	    public_key: |
//	      -----BEGIN PUBLIC KEY-----
//	      MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE...
//	      -----END PUBLIC KEY-----
//
// Unknown fields are refused, and so is a file that trusts no key.
func LoadTrustFile(path string) (*Trust, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > maxTrustFile {
		return nil, fmt.Errorf("trusted keys %s: must be a regular file of at most %d bytes", path, maxTrustFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	t, err := ParseTrustFile(data)
	if err != nil {
		return nil, fmt.Errorf("trusted keys %s: %w", path, err)
	}
	return t, nil
}

// ParseTrustFile parses the content of a --trusted-keys file.
func ParseTrustFile(data []byte) (*Trust, error) {
	if len(data) > maxTrustFile {
		return nil, fmt.Errorf("%d bytes, at most %d", len(data), maxTrustFile)
	}
	var f trustFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, err
	}
	if len(f.Keys) == 0 {
		return nil, errors.New("keys: empty; list at least one key (id and public_key)")
	}
	return NewTrust("keys", f.Keys)
}
