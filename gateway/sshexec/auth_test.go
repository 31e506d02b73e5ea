package sshexec

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestAuth(t *testing.T) {
	userCA, _ := newEd25519Signer(t)
	plain := startSSHD(t, sshdOptions{})
	certOnly := startSSHD(t, sshdOptions{userCA: userCA.PublicKey(), noAuthorizedKey: true})

	tests := []struct {
		name    string
		server  *testSSHD
		auth    func(t *testing.T, s *testSSHD) Auth
		wantErr string // substring; empty means the login works
	}{
		{
			name:   "signer",
			server: plain,
			auth:   func(t *testing.T, s *testSSHD) Auth { return Auth{Signers: []ssh.Signer{s.clientKey}} },
		},
		{
			name:   "key file",
			server: plain,
			auth:   func(t *testing.T, s *testSSHD) Auth { return Auth{KeyFiles: []string{s.clientFile}} },
		},
		{
			name:   "unauthorized key",
			server: plain,
			auth: func(t *testing.T, s *testSSHD) Auth {
				k, _ := newEd25519Signer(t)
				return Auth{Signers: []ssh.Signer{k}}
			},
			wantErr: "unable to authenticate",
		},
		{
			name:   "certificate next to key file",
			server: certOnly,
			auth: func(t *testing.T, s *testSSHD) Auth {
				cert := signUserCert(t, userCA, s.clientKey.PublicKey(), s.user)
				writeFile(t, s.clientFile+"-cert.pub", ssh.MarshalAuthorizedKey(cert))
				t.Cleanup(func() { os.Remove(s.clientFile + "-cert.pub") })
				return Auth{KeyFiles: []string{s.clientFile}}
			},
		},
		{
			name:   "certificate file paired with signer",
			server: certOnly,
			auth: func(t *testing.T, s *testSSHD) Auth {
				other, _ := newEd25519Signer(t)
				f := filepath.Join(t.TempDir(), "user-cert.pub")
				writeFile(t, f, ssh.MarshalAuthorizedKey(signUserCert(t, userCA, s.clientKey.PublicKey(), s.user)))
				return Auth{Signers: []ssh.Signer{other, s.clientKey}, CertFiles: []string{f}}
			},
		},
		{
			name:   "certificate for another principal",
			server: certOnly,
			auth: func(t *testing.T, s *testSSHD) Auth {
				f := filepath.Join(t.TempDir(), "user-cert.pub")
				writeFile(t, f, ssh.MarshalAuthorizedKey(signUserCert(t, userCA, s.clientKey.PublicKey(), "someone-else")))
				return Auth{Signers: []ssh.Signer{s.clientKey}, CertFiles: []string{f}}
			},
			wantErr: "unable to authenticate",
		},
		{
			name:   "certificate without its key",
			server: certOnly,
			auth: func(t *testing.T, s *testSSHD) Auth {
				other, _ := newEd25519Signer(t)
				f := filepath.Join(t.TempDir(), "user-cert.pub")
				writeFile(t, f, ssh.MarshalAuthorizedKey(signUserCert(t, userCA, s.clientKey.PublicKey(), s.user)))
				return Auth{Signers: []ssh.Signer{other}, CertFiles: []string{f}}
			},
			wantErr: "no loaded key matches",
		},
		{
			name:   "agent",
			server: plain,
			auth: func(t *testing.T, s *testSSHD) Auth {
				startAgent(t, s.clientFile)
				return Auth{Agent: true}
			},
		},
		{
			name:   "agent holding key for certificate file",
			server: certOnly,
			auth: func(t *testing.T, s *testSSHD) Auth {
				startAgent(t, s.clientFile)
				f := filepath.Join(t.TempDir(), "user-cert.pub")
				writeFile(t, f, ssh.MarshalAuthorizedKey(signUserCert(t, userCA, s.clientKey.PublicKey(), s.user)))
				return Auth{Agent: true, CertFiles: []string{f}}
			},
		},
		{
			name:   "agent without socket",
			server: plain,
			auth: func(t *testing.T, s *testSSHD) Auth {
				t.Setenv("SSH_AUTH_SOCK", "")
				return Auth{Agent: true}
			},
			wantErr: "SSH_AUTH_SOCK",
		},
		{
			name:   "encrypted key file",
			server: plain,
			auth: func(t *testing.T, s *testSSHD) Auth {
				_, priv := newEd25519Signer(t)
				block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("passphrase-secret"))
				if err != nil {
					t.Fatal(err)
				}
				f := filepath.Join(t.TempDir(), "id_enc")
				writeFile(t, f, pem.EncodeToMemory(block))
				return Auth{KeyFiles: []string{f}}
			},
			wantErr: "ssh-agent",
		},
		{
			name:    "missing key file",
			server:  plain,
			auth:    func(t *testing.T, s *testSSHD) Auth { return Auth{KeyFiles: []string{"/nonexistent/id"}} },
			wantErr: "no such file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.server
			cfg := s.config()
			cfg.Auth = tt.auth(t, s)
			err := dialAndRun(t, cfg, filepath.Join(t.TempDir(), "ran"))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("login: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("login: got %v, want error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

// startAgent serves an ssh-agent holding the key in keyFile on a unix
// socket and points SSH_AUTH_SOCK at it for the test.
func startAgent(t *testing.T, keyFile string) {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short; t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				agent.ServeAgent(keyring, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		os.RemoveAll(dir)
	})
	t.Setenv("SSH_AUTH_SOCK", sock)
}

func TestPassword(t *testing.T) {
	const password = "correct-horse-battery-staple"
	f := startFakeServer(t, password)
	cfg := func(pw string) Config {
		return Config{
			Address:  f.addr,
			User:     "deploy",
			Auth:     Auth{Password: pw},
			HostKeys: HostKeys{Pinned: []ssh.PublicKey{f.hostKey}},
		}
	}

	t.Run("right", func(t *testing.T) {
		c, err := Dial(context.Background(), cfg(password))
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		r, err := c.Run(context.Background(), "anything")
		if err != nil || string(r.Stdout) != "ok\n" {
			t.Fatalf("Run = %+v, %v; want stdout ok", r, err)
		}
	})
	t.Run("wrong", func(t *testing.T) {
		const wrong = "wrong-password-xyzzy"
		_, err := Dial(context.Background(), cfg(wrong))
		if err == nil {
			t.Fatal("Dial with a wrong password succeeded")
		}
		for _, secret := range []string{wrong, password, "xyzzy"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the password", err)
			}
		}
	})
	t.Run("no exit status", func(t *testing.T) {
		c, err := Dial(context.Background(), cfg(password))
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		_, err = c.Run(context.Background(), "no-exit-status")
		var missing *ssh.ExitMissingError
		if !errors.As(err, &missing) {
			t.Fatalf("Run = %v, want a transport error wrapping *ssh.ExitMissingError", err)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("error %q contains the password", err)
		}
	})
}
