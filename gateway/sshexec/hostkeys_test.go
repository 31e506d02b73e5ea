package sshexec

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func randomPublicKey(t testing.TB) ssh.PublicKey {
	s, _ := newEd25519Signer(t)
	return s.PublicKey()
}

func writeKnownHosts(t testing.TB, lines ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "known_hosts")
	writeFile(t, f, []byte(strings.Join(lines, "\n")+"\n"))
	return f
}

// dialAndRun is what a deployer does first: connect, then run a command.
// The command creates marker, which proves whether anything ran.
func dialAndRun(t *testing.T, cfg Config, marker string) error {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Run(context.Background(), "touch "+marker)
	if err != nil {
		return err
	}
	return r.Err()
}

func markerExists(t *testing.T, marker string) bool {
	t.Helper()
	_, err := os.Stat(marker)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestHostKeys(t *testing.T) {
	ca, _ := newEd25519Signer(t)
	otherCA, _ := newEd25519Signer(t)
	plain := startSSHD(t, sshdOptions{ecdsaHostKey: true})
	certified := startSSHD(t, sshdOptions{hostCA: ca})
	hashed := func(s *testSSHD, k ssh.PublicKey) string {
		return knownhosts.Line([]string{knownhosts.HashHostname(knownhosts.Normalize(s.addr))}, k)
	}
	line := func(s *testSSHD, k ssh.PublicKey) string {
		return knownhosts.Line([]string{s.addr}, k)
	}
	caLine := func(s *testSSHD, k ssh.PublicKey) string {
		return "@cert-authority " + line(s, k)
	}

	tests := []struct {
		name   string
		server *testSSHD
		keys   func(s *testSSHD) HostKeys
		// wantExpected is the number of keys HostKeyError.Expected should
		// list; -1 means the dial must succeed.
		wantExpected int
		wantReason   string
	}{
		{
			name:         "pinned",
			server:       plain,
			keys:         func(s *testSSHD) HostKeys { return HostKeys{Pinned: []ssh.PublicKey{s.hostKey}} },
			wantExpected: -1,
		},
		{
			name:   "pinned ecdsa among several server keys",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{Pinned: []ssh.PublicKey{s.ecdsaKey}}
			},
			wantExpected: -1,
		},
		{
			name:         "wrong pinned key",
			server:       plain,
			keys:         func(*testSSHD) HostKeys { return HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}} },
			wantExpected: 1,
		},
		{
			name:   "known_hosts",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t, line(s, s.hostKey))}}
			},
			wantExpected: -1,
		},
		{
			// The server prefers ECDSA; only the ed25519 key is known, so
			// the client must ask for ed25519 alone.
			name:   "known_hosts with one of the server's key types",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t,
					"# unrelated lines first",
					line(&testSSHD{addr: "10.0.0.1:22"}, randomPublicKey(t)),
					line(s, s.hostKey))}}
			},
			wantExpected: -1,
		},
		{
			name:   "known_hosts hashed",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t, hashed(s, s.hostKey))}}
			},
			wantExpected: -1,
		},
		{
			name:   "known_hosts across two files",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{
					writeKnownHosts(t, line(&testSSHD{addr: "10.0.0.1:22"}, s.hostKey)),
					writeKnownHosts(t, line(s, s.ecdsaKey)),
				}}
			},
			wantExpected: -1,
		},
		{
			name:   "known_hosts mismatch",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t, hashed(s, randomPublicKey(t)))}}
			},
			wantExpected: 1,
		},
		{
			name:   "unknown host",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t,
					line(&testSSHD{addr: s.host + ":22"}, s.hostKey), // same host, other port
					caLine(&testSSHD{addr: "10.0.0.1:22"}, ca.PublicKey()))}}
			},
			wantExpected: 0,
		},
		{
			name:   "revoked key also pinned",
			server: plain,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{
					Pinned:          []ssh.PublicKey{s.hostKey},
					KnownHostsFiles: []string{writeKnownHosts(t, "@revoked * "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKey))))},
				}
			},
			wantExpected: 1,
			wantReason:   "revoked",
		},
		{
			name:   "cert-authority",
			server: certified,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t, caLine(s, ca.PublicKey()))}}
			},
			wantExpected: -1,
		},
		{
			name:   "cert-authority hashed",
			server: certified,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t, "@cert-authority "+hashed(s, ca.PublicKey()))}}
			},
			wantExpected: -1,
		},
		{
			name:   "other cert-authority",
			server: certified,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t, caLine(s, otherCA.PublicKey()))}}
			},
			wantExpected: 1,
			wantReason:   "no authorities",
		},
		{
			name:   "revoked host certificate",
			server: certified,
			keys: func(s *testSSHD) HostKeys {
				return HostKeys{KnownHostsFiles: []string{writeKnownHosts(t,
					caLine(s, ca.PublicKey()),
					"@revoked * "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKey))))}}
			},
			wantExpected: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.server
			cfg := s.config()
			cfg.HostKeys = tt.keys(s)
			marker := filepath.Join(t.TempDir(), "ran")
			err := dialAndRun(t, cfg, marker)
			if tt.wantExpected < 0 {
				if err != nil {
					t.Fatalf("dial and run: %v", err)
				}
				if !markerExists(t, marker) {
					t.Fatal("command did not run")
				}
				return
			}
			var hkErr *HostKeyError
			if !errors.As(err, &hkErr) {
				t.Fatalf("dial and run: got %v (%T), want *HostKeyError", err, err)
			}
			if markerExists(t, marker) {
				t.Fatal("a command ran on a host whose key was refused")
			}
			if hkErr.Address != s.addr {
				t.Errorf("Address = %q, want %q", hkErr.Address, s.addr)
			}
			if len(hkErr.Expected) != tt.wantExpected {
				t.Errorf("Expected = %q, want %d entries", hkErr.Expected, tt.wantExpected)
			}
			if !strings.HasPrefix(hkErr.Presented, "ssh-") && !strings.HasPrefix(hkErr.Presented, "ecdsa-") {
				t.Errorf("Presented = %q, want a key type and fingerprint", hkErr.Presented)
			}
			msg := err.Error()
			if !strings.Contains(msg, hkErr.Presented) {
				t.Errorf("error %q does not show the presented key %q", msg, hkErr.Presented)
			}
			for _, e := range hkErr.Expected {
				if !strings.Contains(msg, e) {
					t.Errorf("error %q does not show the expected key %q", msg, e)
				}
			}
			if tt.wantExpected == 0 && !strings.Contains(msg, "unknown host") {
				t.Errorf("error %q does not say the host is unknown", msg)
			}
			if tt.wantReason != "" && !strings.Contains(msg, tt.wantReason) {
				t.Errorf("error %q does not contain %q", msg, tt.wantReason)
			}
		})
	}
}

func TestHostKeyErrorFingerprints(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	wrong := randomPublicKey(t)
	cfg := s.config()
	cfg.HostKeys = HostKeys{Pinned: []ssh.PublicKey{wrong}}
	_, err := Dial(context.Background(), cfg)
	var hkErr *HostKeyError
	if !errors.As(err, &hkErr) {
		t.Fatalf("Dial: got %v, want *HostKeyError", err)
	}
	wantPresented := "ssh-ed25519 " + ssh.FingerprintSHA256(s.hostKey)
	if hkErr.Presented != wantPresented {
		t.Errorf("Presented = %q, want %q", hkErr.Presented, wantPresented)
	}
	wantExpected := "ssh-ed25519 " + ssh.FingerprintSHA256(wrong)
	if len(hkErr.Expected) != 1 || hkErr.Expected[0] != wantExpected {
		t.Errorf("Expected = %q, want [%q]", hkErr.Expected, wantExpected)
	}
}

// TestNoCredentialsToImpostor checks that a refused host key ends the
// connection before any credential, password included, is offered.
func TestNoCredentialsToImpostor(t *testing.T) {
	f := startFakeServer(t, "hunter2-secret")
	cfg := Config{
		Address:  f.addr,
		User:     "deploy",
		Auth:     Auth{Password: "hunter2-secret"},
		HostKeys: HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}},
	}
	_, err := Dial(context.Background(), cfg)
	var hkErr *HostKeyError
	if !errors.As(err, &hkErr) {
		t.Fatalf("Dial: got %v, want *HostKeyError", err)
	}
	if n := f.authAttempts.Load(); n != 0 {
		t.Errorf("server saw %d authentication attempts, want 0", n)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q contains the password", err)
	}
}

func TestHostKeyAlgorithms(t *testing.T) {
	ed := randomPublicKey(t)
	rsaKey := rsaPublicKey(t)
	tests := []struct {
		name  string
		hasCA bool
		plain []ssh.PublicKey
		want  []string
	}{
		{"nothing known", false, nil, nil},
		{"ed25519", false, []ssh.PublicKey{ed}, []string{ssh.KeyAlgoED25519}},
		{"rsa gets sha2 first", false, []ssh.PublicKey{rsaKey}, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}},
		{"ca and key, certificates first", true, []ssh.PublicKey{ed, ed}, append(certAlgorithms[:len(certAlgorithms):len(certAlgorithms)], ssh.KeyAlgoED25519)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hostKeyAlgorithms(tt.hasCA, tt.plain)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("hostKeyAlgorithms = %q, want %q", got, tt.want)
			}
		})
	}
}

func rsaPublicKey(t testing.TB) ssh.PublicKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
