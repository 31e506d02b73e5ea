package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// TestParseFileConfigSignatures reads an environment's trusted keys and
// refuses what cannot be enforced: a requirement without keys, a
// transparency-log requirement (not supported offline), a bad key.
func TestParseFileConfigSignatures(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := "          " + strings.ReplaceAll(strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))), "\n", "\n          ")
	fc, err := ParseFileConfig([]byte("environments:\n  prod:\n    require_signature: true\n    trusted_keys:\n      - id: ci-release\n        public_key: |\n" + pub + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	envs, err := compileEnvironments(fc.Environments)
	if err != nil {
		t.Fatal(err)
	}
	if p := envs["prod"]; !p.RequireSignature || strings.Join(p.trust.IDs(), ",") != "ci-release" {
		t.Errorf("prod = require %v, keys %v; want true, [ci-release]", p.RequireSignature, p.trust.IDs())
	}
	for _, tt := range []struct{ in, want string }{
		{"environments: {prod: {require_signature: true}}", "environments.prod.require_signature: set, but trusted_keys is empty"},
		{"environments: {prod: {require_transparency_log: true}}", "environments.prod.require_transparency_log: not supported"},
		{"environments: {prod: {trusted_keys: [{id: a, public_key: x}]}}", "environments.prod.trusted_keys[0] (a).public_key: no PEM block"},
		{"environments: {prod: {trusted_keys: [{id: a, public_key: x, extra: 1}]}}", "extra"},
	} {
		if _, err := ParseFileConfig([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFileConfig(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}
