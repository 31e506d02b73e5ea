package signature

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

// goSigner signs with sigstore-go's own signer, which writes the same v0.3
// message-signature bundle as cosign sign-blob --new-bundle-format; it
// covers Ed25519, for which cosign makes no key pair.
type goSigner struct {
	kp *sign.EphemeralKeypair
}

func newGoSigner(t *testing.T, alg protocommon.PublicKeyDetails) goSigner {
	t.Helper()
	kp, err := sign.NewEphemeralKeypair(&sign.EphemeralKeypairOptions{Algorithm: alg})
	if err != nil {
		t.Fatal(err)
	}
	return goSigner{kp: kp}
}

func (s goSigner) spec(t *testing.T, id string) KeySpec {
	t.Helper()
	p, err := s.kp.GetPublicKeyPem()
	if err != nil {
		t.Fatal(err)
	}
	return KeySpec{ID: id, PublicKey: p}
}

func (s goSigner) sign(t *testing.T, data []byte) []byte {
	t.Helper()
	b, err := sign.Bundle(&sign.PlainData{Data: data}, s.kp, sign.BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func trust(t *testing.T, specs ...KeySpec) *Trust {
	t.Helper()
	tr, err := NewTrust("keys", specs)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func reasonOf(err error) Reason {
	var se *Error
	if errors.As(err, &se) {
		return se.Reason
	}
	return 0
}

func TestVerify(t *testing.T) {
	ec := newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256)
	ed := newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ED25519_PH)
	other := newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256)
	tr := trust(t, ec.spec(t, "ci-ecdsa"), ed.spec(t, "ci-ed25519"))
	artifact := []byte("release 1.4.2\n")
	tampered := []byte("release 1.4.2!\n")

	// A bundle whose claimed digest was edited to match the tampered
	// bytes: the digest matches, the signature does not.
	forged := func() []byte {
		var m map[string]any
		if err := json.Unmarshal(ec.sign(t, tampered), &m); err != nil {
			t.Fatal(err)
		}
		good := map[string]any{}
		if err := json.Unmarshal(ec.sign(t, artifact), &good); err != nil {
			t.Fatal(err)
		}
		m["messageSignature"].(map[string]any)["signature"] = good["messageSignature"].(map[string]any)["signature"]
		b, _ := json.Marshal(m)
		return b
	}()
	withField := func(b []byte, k string, v any) []byte {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m[k] = v
		out, _ := json.Marshal(m)
		return out
	}

	tests := []struct {
		name       string
		bundle     []byte
		artifact   []byte
		wantSigner string
		want       Reason
	}{
		{"ecdsa", ec.sign(t, artifact), artifact, "ci-ecdsa", 0},
		{"ed25519", ed.sign(t, artifact), artifact, "ci-ed25519", 0},
		{"tampered artifact", ec.sign(t, artifact), tampered, "", WrongArtifact},
		{"bundle of another artifact", ed.sign(t, []byte("other")), artifact, "", WrongArtifact},
		{"untrusted key", other.sign(t, artifact), artifact, "", Untrusted},
		{"forged digest", forged, tampered, "", Untrusted},
		{"missing", nil, artifact, "", Missing},
		{"not json", []byte("{"), artifact, "", Malformed},
		{"unknown field", withField(ec.sign(t, artifact), "extra", 1), artifact, "", Malformed},
		{"old media type", withField(ec.sign(t, artifact), "mediaType", "application/vnd.dev.sigstore.bundle+json;version=0.2"), artifact, "", Malformed},
		{"too large", append(ec.sign(t, artifact), bytes.Repeat([]byte(" "), MaxBundleBytes)...), artifact, "", Malformed},
		{"empty object", []byte("{}"), artifact, "", Malformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			signer, err := tr.Verify(tc.bundle, bytes.NewReader(tc.artifact))
			if got := reasonOf(err); got != tc.want || signer != tc.wantSigner {
				t.Fatalf("Verify = %q, %v (reason %d), want %q, reason %d", signer, err, got, tc.wantSigner, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "trusted keys: ci-ecdsa, ci-ed25519") {
				t.Errorf("error %q does not name the trusted keys", err)
			}
		})
	}
}

func TestVerifyNilTrust(t *testing.T) {
	ec := newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256)
	var tr *Trust
	_, err := tr.Verify(ec.sign(t, []byte("a")), bytes.NewReader([]byte("a")))
	if reasonOf(err) != Untrusted || !strings.Contains(err.Error(), "no key is trusted") {
		t.Fatalf("Verify with no trust = %v, want Untrusted naming no key", err)
	}
}

func pemOf(t *testing.T, typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestNewTrustRefuses(t *testing.T) {
	ec := newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256)
	good := ec.spec(t, "a").PublicKey
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	privDER, _ := x509.MarshalECPrivateKey(p384)
	many := make([]KeySpec, MaxKeys+1)

	tests := []struct {
		name  string
		specs []KeySpec
		want  string
	}{
		{"bad id", []KeySpec{{ID: "-x", PublicKey: good}}, "must be 1 to 63"},
		{"empty id", []KeySpec{{ID: "", PublicKey: good}}, "must be 1 to 63"},
		{"no pem", []KeySpec{{ID: "a", PublicKey: "MFkw"}}, "no PEM block"},
		{"private key", []KeySpec{{ID: "a", PublicKey: pemOf(t, "EC PRIVATE KEY", privDER)}}, "never the private one"},
		{"p384", []KeySpec{{ID: "a", PublicKey: pemOf(t, "PUBLIC KEY", p384DER)}}, "only P-256"},
		{"rsa", []KeySpec{{ID: "a", PublicKey: pemOf(t, "PUBLIC KEY", rsaDER)}}, "only ECDSA P-256 and Ed25519"},
		{"two blocks", []KeySpec{{ID: "a", PublicKey: good + good}}, "more than one PEM block"},
		{"same id", []KeySpec{{ID: "a", PublicKey: good}, {ID: "a", PublicKey: newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ED25519_PH).spec(t, "x").PublicKey}}, "used twice"},
		{"same key", []KeySpec{{ID: "a", PublicKey: good}, {ID: "b", PublicKey: good}}, `the same key as "a"`},
		{"too many", many, "at most 64"},
		{"huge", []KeySpec{{ID: "a", PublicKey: strings.Repeat("x", 1<<20)}}, "at most 8192"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTrust("environments.prod.trusted_keys", tc.specs)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "environments.prod.trusted_keys") {
				t.Fatalf("NewTrust = %v, want an error naming the field and containing %q", err, tc.want)
			}
		})
	}
}

func TestParseTrustFile(t *testing.T) {
	ec := newGoSigner(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256)
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(ec.spec(t, "").PublicKey), "\n", "\n      ")
	tr, err := ParseTrustFile([]byte("keys:\n  - id: ci-release\n    public_key: |\n" + indented + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tr.IDs(), ","); got != "ci-release" {
		t.Errorf("IDs = %q", got)
	}
	for _, bad := range []string{"", "keys: []", "keys:\n  - id: a\n    public_key: x\n    extra: 1\n", "other: 1"} {
		if _, err := ParseTrustFile([]byte(bad)); err == nil {
			t.Errorf("ParseTrustFile(%q) = nil error", bad)
		}
	}
}
