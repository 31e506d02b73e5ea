package sshexec

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/crypto/ssh"
)

func TestCheckAndSetDefaults(t *testing.T) {
	key := randomPublicKey(t)
	valid := func() Config {
		return Config{
			Address:  "node1.example",
			User:     "deploy",
			Auth:     Auth{Password: "x"},
			HostKeys: HostKeys{Pinned: []ssh.PublicKey{key}},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; empty means valid
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c Config) {
				want := Config{
					Address:            "node1.example:22",
					User:               "deploy",
					DialTimeout:        10 * time.Second,
					HandshakeTimeout:   10 * time.Second,
					DialRetries:        3,
					DialBackoff:        200 * time.Millisecond,
					DialMaxBackoff:     2 * time.Second,
					KeepaliveInterval:  5 * time.Second,
					KeepaliveMaxMissed: 3,
					MaxOutputBytes:     64 << 10,
					UploadSessions:     4,
				}
				if diff := cmp.Diff(want, c, cmpopts.IgnoreFields(Config{}, "Auth", "HostKeys", "Logger")); diff != "" {
					t.Errorf("defaults (-want +got):\n%s", diff)
				}
				if c.Logger == nil {
					t.Error("Logger is nil")
				}
			},
		},
		{name: "port kept", mutate: func(c *Config) { c.Address = "10.1.2.3:2222" }, check: wantAddress("10.1.2.3:2222")},
		{name: "bare ipv6", mutate: func(c *Config) { c.Address = "fd00::1" }, check: wantAddress("[fd00::1]:22")},
		{name: "bracketed ipv6", mutate: func(c *Config) { c.Address = "[fd00::1]" }, check: wantAddress("[fd00::1]:22")},
		{name: "ipv6 with port", mutate: func(c *Config) { c.Address = "[fd00::1]:2200" }, check: wantAddress("[fd00::1]:2200")},
		{name: "no address", mutate: func(c *Config) { c.Address = " " }, wantErr: "Address"},
		{name: "empty port", mutate: func(c *Config) { c.Address = "host:" }, wantErr: "Address"},
		{name: "no user", mutate: func(c *Config) { c.User = "" }, wantErr: "User"},
		{name: "no credentials", mutate: func(c *Config) { c.Auth = Auth{} }, wantErr: "no credentials"},
		{name: "nil signer", mutate: func(c *Config) { c.Auth = Auth{Signers: []ssh.Signer{nil}} }, wantErr: "Signers[0]"},
		{name: "agent only", mutate: func(c *Config) { c.Auth = Auth{Agent: true} }},
		{name: "no host keys", mutate: func(c *Config) { c.HostKeys = HostKeys{} }, wantErr: "always verified"},
		{name: "known_hosts only", mutate: func(c *Config) { c.HostKeys = HostKeys{KnownHostsFiles: []string{"/x"}} }},
		{name: "nil pinned key", mutate: func(c *Config) { c.HostKeys.Pinned = []ssh.PublicKey{nil} }, wantErr: "Pinned[0]"},
		{name: "negative dial timeout", mutate: func(c *Config) { c.DialTimeout = -1 }, wantErr: "DialTimeout"},
		{name: "negative max missed", mutate: func(c *Config) { c.KeepaliveMaxMissed = -1 }, wantErr: "KeepaliveMaxMissed"},
		{name: "negative output limit", mutate: func(c *Config) { c.MaxOutputBytes = -1 }, wantErr: "MaxOutputBytes"},
		{name: "negative dial backoff", mutate: func(c *Config) { c.DialBackoff = -1 }, wantErr: "DialBackoff"},
		{name: "max backoff below backoff", mutate: func(c *Config) { c.DialBackoff, c.DialMaxBackoff = time.Second, time.Millisecond }, wantErr: "DialMaxBackoff"},
		{
			name:   "long backoff raises the default max",
			mutate: func(c *Config) { c.DialBackoff = 5 * time.Second },
			check: func(t *testing.T, c Config) {
				if c.DialMaxBackoff != 5*time.Second {
					t.Errorf("DialMaxBackoff = %v, want 5s", c.DialMaxBackoff)
				}
			},
		},
		{
			name:   "retries disabled",
			mutate: func(c *Config) { c.DialRetries = -1 },
			check: func(t *testing.T, c Config) {
				if c.DialRetries >= 0 {
					t.Errorf("DialRetries = %d, want negative (none)", c.DialRetries)
				}
			},
		},
		{name: "negative upload sessions", mutate: func(c *Config) { c.UploadSessions = -1 }, wantErr: "UploadSessions"},
		{name: "local address", mutate: func(c *Config) { c.LocalAddr = "127.0.0.2" }},
		{name: "local address not an IP", mutate: func(c *Config) { c.LocalAddr = "gw.example" }, wantErr: "LocalAddr"},
		{name: "local address with port", mutate: func(c *Config) { c.LocalAddr = "127.0.0.2:22" }, wantErr: "LocalAddr"},
		{
			name:   "keepalive disabled",
			mutate: func(c *Config) { c.KeepaliveInterval = -1 },
			check: func(t *testing.T, c Config) {
				if c.KeepaliveInterval >= 0 {
					t.Errorf("KeepaliveInterval = %v, want negative (disabled)", c.KeepaliveInterval)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			if tt.mutate != nil {
				tt.mutate(&c)
			}
			err := c.CheckAndSetDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CheckAndSetDefaults() = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckAndSetDefaults() = %v", err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func wantAddress(want string) func(*testing.T, Config) {
	return func(t *testing.T, c Config) {
		if c.Address != want {
			t.Errorf("Address = %q, want %q", c.Address, want)
		}
	}
}

func TestParseAuthorizedKey(t *testing.T) {
	key := randomPublicKey(t)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	tests := []struct {
		name, in string
		wantErr  bool
	}{
		{"plain", line, false},
		{"comment and spaces", "  " + line + " root@node1\n", false},
		{"garbage", "ssh-ed25519 not-base64", true},
		{"empty", "", true},
		{"two keys", line + "\n" + line, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorizedKey(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseAuthorizedKey(%q) = %v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAuthorizedKey(%q): %v", tt.in, err)
			}
			if ssh.FingerprintSHA256(got) != ssh.FingerprintSHA256(key) {
				t.Errorf("ParseAuthorizedKey(%q) = %s, want %s", tt.in, ssh.FingerprintSHA256(got), ssh.FingerprintSHA256(key))
			}
		})
	}
}
