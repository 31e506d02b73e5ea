package sshca

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func caSigner(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

// hostAddrs is a host with one global IPv4, one IPv6 and loopback.
func hostAddrs() ([]net.Addr, error) {
	var out []net.Addr
	for _, c := range []string{"127.0.0.1/8", "::1/128", "192.0.2.10/24", "2001:db8::7/64"} {
		ip, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, err
		}
		n.IP = ip
		out = append(out, n)
	}
	return out, nil
}

type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ips, ok := r[host]; ok {
		return ips, nil
	}
	return nil, errors.New("no such host")
}

func newAuthority(t *testing.T, ca ssh.Signer, now time.Time, sources []netip.Prefix) *Authority {
	t.Helper()
	a, err := New(Config{
		CA:              ca,
		SourceAddresses: sources,
		InterfaceAddrs:  hostAddrs,
		Resolver: fakeResolver{
			"lo.example.internal":  {netip.MustParseAddr("127.0.1.1")},
			"srv.example.internal": {netip.MustParseAddr("192.0.2.99")},
		},
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestIssueCertificateFields(t *testing.T) {
	ca, _ := caSigner(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	a := newAuthority(t, ca, now, nil)
	req := Request{
		User: "deploy", NodeAddress: "192.0.2.50:22",
		RolloutID: "r-42", NodeID: "srv-00001", AssignmentID: "a-7", Gateway: "gw-seoul-1",
		ValidBefore: now.Add(time.Hour),
	}
	c, err := a.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	cert := c.Cert
	type fields struct {
		Type        uint32
		KeyID       string
		Principals  []string
		After       time.Time
		Before      time.Time
		Critical    map[string]string
		Extensions  map[string]string
		KeyType     string
		SignatureBy string
	}
	got := fields{
		Type: cert.CertType, KeyID: cert.KeyId, Principals: cert.ValidPrincipals,
		After: time.Unix(int64(cert.ValidAfter), 0).UTC(), Before: time.Unix(int64(cert.ValidBefore), 0).UTC(),
		Critical: cert.CriticalOptions, Extensions: cert.Extensions,
		KeyType: cert.Key.Type(), SignatureBy: ssh.FingerprintSHA256(cert.SignatureKey),
	}
	want := fields{
		Type:       ssh.UserCert,
		KeyID:      "outpost rollout=r-42 node=srv-00001 assignment=a-7 gateway=gw-seoul-1",
		Principals: []string{"deploy"},
		After:      now.Add(-time.Minute), Before: now.Add(time.Hour),
		// The node is not on loopback: only the host's own global
		// addresses, sorted.
		Critical:    map[string]string{"source-address": "192.0.2.10/32,2001:db8::7/128"},
		Extensions:  map[string]string{},
		KeyType:     ssh.KeyAlgoED25519,
		SignatureBy: ssh.FingerprintSHA256(ca.PublicKey()),
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("certificate (-want +got):\n%s", d)
	}
	if cert.Serial == 0 {
		t.Error("serial is 0; want a random serial")
	}
	if c.Signer.PublicKey().Type() != ssh.CertAlgoED25519v01 {
		t.Errorf("signer presents %s, want the certificate", c.Signer.PublicKey().Type())
	}

	// The certificate checks out against the CA, as sshd would check it,
	// from the host's address and not from another.
	checker := &ssh.CertChecker{
		IsUserAuthority:          func(k ssh.PublicKey) bool { return string(k.Marshal()) == string(ca.PublicKey().Marshal()) },
		Clock:                    func() time.Time { return now },
		SupportedCriticalOptions: []string{"source-address"},
	}
	if err := checker.CheckCert("deploy", cert); err != nil {
		t.Errorf("CheckCert: %v", err)
	}
	if err := checker.CheckCert("root", cert); err == nil {
		t.Error("CheckCert for another principal passed")
	}
	checker.Clock = func() time.Time { return now.Add(time.Hour + time.Second) }
	if err := checker.CheckCert("deploy", cert); err == nil {
		t.Error("CheckCert after ValidBefore passed")
	}

	// Each deployment has its own key and serial.
	c2, err := a.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if string(c2.Cert.Key.Marshal()) == string(cert.Key.Marshal()) || c2.Cert.Serial == cert.Serial {
		t.Error("two certificates share a key or a serial")
	}
	if c.Used() {
		t.Error("Used before any login")
	}
	if _, err := c.Signer.Sign(rand.Reader, []byte("x")); err != nil || !c.Used() {
		t.Errorf("after Sign: Used = %v (%v), want true", c.Used(), err)
	}
}

func TestSourceAddressDefaults(t *testing.T) {
	ca, _ := caSigner(t)
	now := time.Now()
	a := newAuthority(t, ca, now, nil)
	const global = "192.0.2.10/32,2001:db8::7/128"
	const withLoopback = "127.0.0.0/8,192.0.2.10/32,::1/128,2001:db8::7/128"
	for _, tc := range []struct {
		node string
		want string
	}{
		{"192.0.2.50", global},
		{"192.0.2.50:2222", global},
		{"[2001:db8::9]:22", global},
		{"srv.example.internal:22", global},
		{"unresolvable.example.internal", global},
		// A node on loopback is reached from loopback.
		{"127.0.0.1:22", withLoopback},
		{"127.44.5.6:2200", withLoopback},
		{"[::1]:22", withLoopback},
		{"::1", withLoopback},
		{"localhost:22", withLoopback},
		{"LOCALHOST", withLoopback},
		{"lo.example.internal:22", withLoopback},
	} {
		c, err := a.Issue(context.Background(), Request{User: "u", NodeAddress: tc.node, ValidBefore: now.Add(time.Hour)})
		if err != nil {
			t.Errorf("Issue for %s: %v", tc.node, err)
			continue
		}
		if got := c.Cert.CriticalOptions["source-address"]; got != tc.want {
			t.Errorf("node %s: source-address %q, want %q", tc.node, got, tc.want)
		}
	}

	// Configured addresses replace the defaults, loopback included.
	fixed, err := ParseSourceAddresses("10.9.0.0/16, 10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	a = newAuthority(t, ca, now, fixed)
	c, err := a.Issue(context.Background(), Request{User: "u", NodeAddress: "127.0.0.1", ValidBefore: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Cert.CriticalOptions["source-address"]; got != "10.9.0.0/16,10.1.2.3/32" {
		t.Errorf("configured source-address %q", got)
	}

	// A host with only loopback cannot bind a certificate for a remote node.
	onlyLo, err := New(Config{CA: ca, InterfaceAddrs: func() ([]net.Addr, error) {
		_, n, _ := net.ParseCIDR("127.0.0.1/8")
		return []net.Addr{n}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = onlyLo.Issue(context.Background(), Request{User: "u", NodeAddress: "192.0.2.50", ValidBefore: time.Now().Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "--ssh-cert-source-address") {
		t.Errorf("Issue on a loopback-only host for a remote node: %v, want an error naming --ssh-cert-source-address", err)
	}
}

func TestIssueRefusesBadRequests(t *testing.T) {
	ca, _ := caSigner(t)
	now := time.Now()
	a := newAuthority(t, ca, now, nil)
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"no user", Request{ValidBefore: now.Add(time.Hour)}},
		{"user with comma", Request{User: "deploy,root", ValidBefore: now.Add(time.Hour)}},
		{"user with newline", Request{User: "deploy\nroot", ValidBefore: now.Add(time.Hour)}},
		{"huge user", Request{User: strings.Repeat("u", 300), ValidBefore: now.Add(time.Hour)}},
		{"already expired", Request{User: "u", ValidBefore: now.Add(-time.Second)}},
		{"expires now", Request{User: "u", ValidBefore: now}},
		{"longer than a day", Request{User: "u", ValidBefore: now.Add(MaxValidity + time.Second)}},
	} {
		if c, err := a.Issue(context.Background(), tc.req); err == nil {
			t.Errorf("%s: Issue = %v, want an error", tc.name, c.Cert.KeyId)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without a CA succeeded")
	}
	if _, err := New(Config{CA: ca, SourceAddresses: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}}); err == nil {
		t.Error("New with a non-canonical source block succeeded")
	}
}

func TestKeyID(t *testing.T) {
	for _, tc := range []struct {
		in   [4]string
		want string
	}{
		{[4]string{"r1", "srv-1", "a1", "gw"}, "outpost rollout=r1 node=srv-1 assignment=a1 gateway=gw"},
		{[4]string{"", "", "", ""}, "outpost rollout=- node=- assignment=- gateway=-"},
		// No value can add a field, a line or a quote to sshd's log.
		{[4]string{"r1 node=evil", "n\nFake log line", `a"b`, "gw\x00é"}, "outpost rollout=r1_node_evil node=n_Fake_log_line assignment=a_b gateway=gw__"},
	} {
		if got := KeyID(tc.in[0], tc.in[1], tc.in[2], tc.in[3]); got != tc.want {
			t.Errorf("KeyID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := KeyID(strings.Repeat("r", 10000), "n", "a", "g")
	if len(long) > 200 || !strings.Contains(long, "...") {
		t.Errorf("KeyID of a 10000-byte rollout id is %d bytes; want it cut short with ...", len(long))
	}
}

func TestParseSourceAddresses(t *testing.T) {
	got, err := ParseSourceAddresses("10.0.0.0/8,192.0.2.7, 2001:db8::/32,::1")
	if err != nil {
		t.Fatal(err)
	}
	if s := joinPrefixes(got); s != "10.0.0.0/8,192.0.2.7/32,2001:db8::/32,::1/128" {
		t.Errorf("parsed %q", s)
	}
	for _, bad := range []string{
		"", ",", "10.0.0.0/8,", "10.1.2.3/8", "10.0.0.0/33", "host.example", "fe80::1%eth0",
		"::ffff:10.0.0.1", "10.0.0.1 10.0.0.2", strings.Repeat("10.0.0.1,", 64) + "10.0.0.1",
	} {
		if p, err := ParseSourceAddresses(bad); err == nil {
			t.Errorf("ParseSourceAddresses(%q) = %v, want an error", bad, p)
		}
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	_, priv := caSigner(t)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(block)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("ca", keyPEM, 0o600)
	s, err := LoadCA(good)
	if err != nil {
		t.Fatalf("LoadCA(0600): %v", err)
	}
	if ssh.FingerprintSHA256(s.PublicKey()) == "" {
		t.Fatal("no public key")
	}
	if _, err := LoadCA(write("ca-ro", keyPEM, 0o400)); err != nil {
		t.Errorf("LoadCA(0400): %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o602} {
		p := write("ca-open", keyPEM, mode)
		_, err := LoadCA(p)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("LoadCA(mode %04o) = %v, want a refusal telling to chmod 600", mode, err)
		}
	}
	// Made once with ssh-keygen -a 1 (encrypting here takes seconds under
	// the race detector).
	enc, err := os.ReadFile(filepath.Join("testdata", "encrypted_ca"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(write("ca-enc", enc, 0o600)); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Errorf("LoadCA(encrypted) = %v, want encrypted", err)
	}
	// A public key, garbage or a huge file: refused without echoing it.
	for name, data := range map[string][]byte{
		"pub":     ssh.MarshalAuthorizedKey(s.PublicKey()),
		"garbage": []byte("not a key SECRET-CONTENT"),
		"huge":    []byte(strings.Repeat("A", maxKeyFile+10)),
	} {
		_, err := LoadCA(write(name, data, 0o600))
		if err == nil || strings.Contains(err.Error(), "SECRET-CONTENT") || strings.Contains(err.Error(), "AAAA") {
			t.Errorf("LoadCA(%s) = %v, want an error that does not echo the file", name, err)
		}
	}
	if _, err := LoadCA(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadCA(missing) succeeded")
	}
	if _, err := LoadCA(dir); err == nil {
		t.Error("LoadCA(directory) succeeded")
	}
	// A FIFO in place of the key must not hang the gateway's start.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("LoadCA(fifo) = %v, want not a regular file", err)
	}
	// The key's own bytes are in no error.
	if _, err := LoadCA(write("ca-open2", keyPEM, 0o644)); err != nil && strings.Contains(err.Error(), string(keyPEM[40:80])) {
		t.Error("error echoes the key")
	}
}

// BenchmarkIssue measures what a certificate adds to one node deployment:
// an ed25519 key pair, a signature and the host's addresses.
func BenchmarkIssue(b *testing.B) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ca, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(Config{CA: ca})
	if err != nil {
		b.Fatal(err)
	}
	req := Request{User: "deploy", NodeAddress: "127.0.0.1:22", RolloutID: "r", NodeID: "n", AssignmentID: "a", Gateway: "g"}
	for b.Loop() {
		req.ValidBefore = time.Now().Add(time.Hour)
		if _, err := a.Issue(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
