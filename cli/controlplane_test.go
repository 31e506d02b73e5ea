package cli

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/pki"
)

var readyAddr = regexp.MustCompile(`control plane ready.* addr=(127\.0\.0\.1:\d+)`)

// startControlPlane runs `outpost controlplane` on a free port with its
// data in dir/data and returns it, its address and its admin credential.
func startControlPlane(t *testing.T, dir string, args ...string) (*daemon, string, string) {
	t.Helper()
	d := startDaemon(t, nil, append([]string{"controlplane", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data")}, args...)...)
	d.err.waitFor(t, "control plane ready", 60*time.Second)
	m := readyAddr.FindStringSubmatch(d.err.String())
	if m == nil {
		t.Fatalf("no address in the ready log:\n%s", d.err.String())
	}
	admin, err := filepath.Abs(filepath.Join(dir, "data", "admin.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.err.String(), "admin_credential="+admin) {
		t.Errorf("the ready log does not name the admin credential %s:\n%s", admin, d.err.String())
	}
	return d, m[1], admin
}

func TestControlPlaneServesUntilInterrupted(t *testing.T) {
	dir := t.TempDir()
	d, addr, admin := startControlPlane(t, dir)
	env := map[string]string{controlPlaneEnv: addr, credentialEnv: admin}

	// The client verbs work against it: an empty inventory, then one applied.
	if code, out, errOut := runCLI(t, env, "node", "list"); code != 0 || out != "" || !strings.Contains(errOut, "no nodes") {
		t.Errorf("node list: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	inv := writeFile(t, "nodes.yaml", inventoryYAML)
	if code, out, errOut := runCLI(t, env, "node", "apply", "-f", inv); code != 0 || out != "3 nodes: 3 created, 0 updated, 0 unchanged\n" {
		t.Errorf("node apply: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := runCLI(t, env, "node", "list", "-l", "app=demo"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Errorf("node list -l app=demo: exit %d, stdout %q; want a header and 2 nodes", code, out)
	}
	// The credential names the address: it alone is enough.
	if code, out, errOut := runCLI(t, map[string]string{credentialEnv: admin}, "node", "list"); code != 0 || strings.Count(out, "\n") != 4 {
		t.Errorf("node list with only the credential: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	if code := d.stop(t); code != 0 {
		t.Errorf("controlplane exit %d after interrupt, want 0; stderr:\n%s", code, d.err.String())
	}
	if !strings.Contains(d.err.String(), "control plane stopped") {
		t.Errorf("no 'control plane stopped' in the log:\n%s", d.err.String())
	}
}

func TestUsersAndRolesThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	_, addr, admin := startControlPlane(t, dir)
	env := map[string]string{controlPlaneEnv: addr, credentialEnv: admin}

	vera := filepath.Join(dir, "vera.pem")
	code, out, errOut := runCLI(t, env, "user", "create", "vera", "--role", "viewer", "-f", vera)
	if code != 0 || !strings.Contains(out, "wrote "+vera+": user vera, role viewer") {
		t.Fatalf("user create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if fi, err := os.Stat(vera); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credential file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if code, _, errOut := runCLI(t, env, "user", "create", "vera", "--role", "viewer", "-f", vera); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("user create over an existing file: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, env, "user", "create", "x", "--role", "root"); code != 2 || !strings.Contains(errOut, `unknown role "root"`) {
		t.Errorf("user create --role root: exit %d, stderr %q", code, errOut)
	}

	asVera := map[string]string{credentialEnv: vera}
	if code, _, errOut := runCLI(t, asVera, "node", "list"); code != 0 {
		t.Errorf("viewer node list: exit %d, stderr %q", code, errOut)
	}
	inv := writeFile(t, "nodes.yaml", inventoryYAML)
	code, _, errOut = runCLI(t, asVera, "node", "apply", "-f", inv)
	if code != 1 || !strings.Contains(errOut, "permission denied") || !strings.Contains(errOut, "requires role admin") {
		t.Errorf("viewer node apply: exit %d, stderr %q; want permission denied", code, errOut)
	}
	code, _, errOut = runCLI(t, asVera, "token", "create", "--datacenter", "dc-1")
	if code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Errorf("viewer token create: exit %d, stderr %q; want permission denied", code, errOut)
	}

	code, out, _ = runCLI(t, env, "user", "list")
	if code != 0 || !strings.Contains(out, "vera") || !strings.Contains(out, "admin") {
		t.Errorf("user list: exit %d, stdout %q", code, out)
	}
	if code, out, errOut := runCLI(t, env, "user", "revoke", "vera", "--reason", "test"); code != 0 || !strings.Contains(out, "revoked vera") {
		t.Errorf("user revoke: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, asVera, "node", "list")
	if code != 1 || !strings.Contains(errOut, "not authenticated") || !strings.Contains(errOut, "revoked") {
		t.Errorf("revoked viewer node list: exit %d, stderr %q; want not authenticated", code, errOut)
	}
	// A credential of another installation fails TLS, and says so.
	other := filepath.Join(dir, "other.pem")
	writeForeignCredential(t, other)
	code, _, errOut = runCLI(t, map[string]string{controlPlaneEnv: addr, credentialEnv: other}, "node", "list")
	if code != 1 || !strings.Contains(errOut, "TLS with the control plane") {
		t.Errorf("foreign credential: exit %d, stderr %q", code, errOut)
	}
}

// writeForeignCredential writes an admin credential of a CA no control
// plane here knows.
func writeForeignCredential(t *testing.T, path string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "admin", Role: pki.RoleAdmin}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCredential(path, ca.CertPEM(), cert, key, ""); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for a daemon to end on its own and returns its exit code.
func (d *daemon) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case code := <-d.done:
		d.done <- code
		return code
	case <-time.After(timeout):
		t.Fatalf("daemon still running after %v; stderr:\n%s", timeout, d.err.String())
		return -1
	}
}

func TestJoinTokensThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	cp, addr, admin := startControlPlane(t, dir)
	env := map[string]string{controlPlaneEnv: addr, credentialEnv: admin}
	key := writeKey(t, dir)
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	createToken := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, env, append([]string{"token", "create"}, args...)...)
		if code != 0 || !strings.HasPrefix(out, "opjt_") || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, "single use") {
			t.Fatalf("token create %q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	gateway := func(name, tokenFile string) *daemon {
		return startDaemon(t, nil, "gateway", "--controlplane", addr, "--name", name, "--ssh-key", key, "--known-hosts", known,
			"--cache-dir", filepath.Join(dir, name, "cache"), "--credential-file", filepath.Join(dir, name, "gateway.pem"),
			"--join-token-file", tokenFile)
	}
	var tokens []string

	// A fresh token joins once; the datacenter comes from the token.
	tok := createToken("--datacenter", "dc-1", "--ttl", "30m")
	tokens = append(tokens, tok)
	gw1 := gateway("gw-1", tok)
	gw1.err.waitFor(t, "joined the control plane", 30*time.Second)
	gw1.err.waitFor(t, "connected to the control plane", 30*time.Second)
	if !strings.Contains(gw1.err.String(), "datacenter=dc-1") {
		t.Errorf("gateway log does not name dc-1:\n%s", gw1.err.String())
	}
	if fi, err := os.Stat(filepath.Join(dir, "gw-1", "gateway.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("gateway credential: %v", err)
	}

	// The same token again is refused.
	gw2 := gateway("gw-2", tok)
	if code := gw2.waitExit(t, 30*time.Second); code != 1 || !strings.Contains(gw2.err.String(), "join token already used") {
		t.Errorf("second join with one token: exit %d; want 1 and 'already used':\n%s", code, gw2.err.String())
	}

	// An expired token is refused.
	expired := createToken("--datacenter", "dc-1", "--ttl", "1s")
	tokens = append(tokens, expired)
	time.Sleep(1500 * time.Millisecond)
	gw3 := gateway("gw-3", expired)
	if code := gw3.waitExit(t, 30*time.Second); code != 1 || !strings.Contains(gw3.err.String(), "join token expired") {
		t.Errorf("join with an expired token: exit %d; want 1 and 'expired':\n%s", code, gw3.err.String())
	}

	// A revoked token is refused.
	revoked := createToken("--datacenter", "dc-2")
	tokens = append(tokens, revoked)
	code, out, _ := runCLI(t, env, "token", "list", "-o", "json")
	ids := regexp.MustCompile(`"id": "([0-9a-f]{16})"`).FindAllStringSubmatch(out, -1)
	if code != 0 || len(ids) != 3 {
		t.Fatalf("token list: exit %d, %d ids in %s", code, len(ids), out)
	}
	code, out, errOut := runCLI(t, env, "token", "list")
	for _, want := range []string{"used", "expired", "active", "dc-2"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("token list: exit %d, stdout %q (stderr %q) lacks %q", code, out, errOut, want)
		}
	}
	for _, id := range ids {
		runCLI(t, env, "token", "revoke", id[1])
	}
	gw4 := gateway("gw-4", revoked)
	if code := gw4.waitExit(t, 30*time.Second); code != 1 || !strings.Contains(gw4.err.String(), "join token revoked") {
		t.Errorf("join with a revoked token: exit %d; want 1 and 'revoked':\n%s", code, gw4.err.String())
	}

	// A restarted gateway uses its credential; the token is not needed.
	if code := gw1.stop(t); code != 0 {
		t.Errorf("gateway exit %d after interrupt", code)
	}
	gw1b := startDaemon(t, nil, "gateway", "--controlplane", addr, "--ssh-key", key, "--known-hosts", known,
		"--cache-dir", filepath.Join(dir, "gw-1", "cache"), "--credential-file", filepath.Join(dir, "gw-1", "gateway.pem"))
	gw1b.err.waitFor(t, "connected to the control plane", 30*time.Second)
	if strings.Contains(gw1b.err.String(), "joined") {
		t.Errorf("restarted gateway joined again:\n%s", gw1b.err.String())
	}

	// No token's secret is in any log.
	logs := cp.err.String() + gw1.err.String() + gw1b.err.String() + gw2.err.String() + gw3.err.String() + gw4.err.String()
	for _, path := range tokens {
		b, _ := os.ReadFile(path)
		secret, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(b)), pki.JoinTokenPrefix), ".")
		if secret == "" || strings.Contains(logs, secret) {
			t.Errorf("a join token's secret is in the logs (or unreadable: %q)", secret)
		}
	}
}

func TestControlPlaneEtcdAndKEKFlags(t *testing.T) {
	dir := t.TempDir()
	kek := filepath.Join(dir, "secrets", "ca.kek")
	first, _, _ := startControlPlane(t, dir, "--kek-file", kek)
	if fi, err := os.Stat(kek); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("--kek-file: %v, %v; want a 0600 file", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "ca.kek")); err == nil {
		t.Error("a KEK was written in the data dir despite --kek-file")
	}

	// A second replica on the first one's etcd: its socket is plain text,
	// refused unless --etcd-insecure; with it, the replica needs the KEK.
	socket := "unix://" + filepath.Join(dir, "data", "etcd", "client.sock")
	base := []string{"controlplane", "--listen", "127.0.0.1:0", "--name", "cp-2", "--etcd-endpoints", socket}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain text", []string{"--data-dir", filepath.Join(dir, "d2")}, "--etcd-insecure"},
		{"no KEK", []string{"--data-dir", filepath.Join(dir, "d3"), "--etcd-insecure"}, filepath.Join(dir, "d3", "ca.kek") + " does not exist"},
		{"TLS files for a plain endpoint", []string{"--data-dir", filepath.Join(dir, "d4"), "--etcd-insecure", "--etcd-cacert", kek}, "use https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, nil, append(base, tc.args...)...)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, tc.want)
			}
		})
	}
	if code, _, errOut := runCLI(t, nil, "controlplane", "--data-dir", filepath.Join(dir, "d5"), "--etcd-insecure"); code != 1 || !strings.Contains(errOut, "external etcd") {
		t.Errorf("--etcd-insecure without --etcd-endpoints: exit %d, stderr %q", code, errOut)
	}
	second := startDaemon(t, nil, append(base, "--data-dir", filepath.Join(dir, "d6"), "--etcd-insecure", "--kek-file", kek)...)
	second.err.waitFor(t, "control plane ready", 60*time.Second)
	if code := second.stop(t); code != 0 {
		t.Errorf("second replica exit %d; stderr:\n%s", code, second.err.String())
	}
	if code := first.stop(t); code != 0 {
		t.Errorf("first replica exit %d; stderr:\n%s", code, first.err.String())
	}
}

// TestControlPlaneRefusesBadLimits: a connection limit out of range is an
// error that names it, and nothing is created.
func TestControlPlaneRefusesBadLimits(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--handshake-timeout", "1ns"}, "HandshakeTimeout 1ns must be between 100ms and 2m0s"},
		{[]string{"--handshake-timeout", "1000h"}, "HandshakeTimeout 1000h0m0s must be between"},
		{[]string{"--handshake-timeout", "-1s"}, "HandshakeTimeout -1s"},
		{[]string{"--max-conns", "-1"}, "negative MaxConns -1"},
		{[]string{"--max-unauthenticated-conns", "-7"}, "negative MaxUnauthenticatedConns -7"},
		{[]string{"--max-unauthenticated-conns", "10", "--max-unauthenticated-conns-per-ip", "11"}, "MaxUnauthenticatedConnsPerIP 11 exceeds MaxUnauthenticatedConns 10"},
		{[]string{"--max-conns", "20", "--max-unauthenticated-conns", "21"}, "MaxUnauthenticatedConns 21 exceeds MaxConns 20"},
		{[]string{"--max-streams-per-conn", "-5"}, "MaxStreamsPerConn -5"},
		{[]string{"--max-streams-per-conn", "99999999999"}, "MaxStreamsPerConn 99999999999 must be between 0 and 4294967295"},
	}
	for _, tt := range tests {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"controlplane", "--listen", "127.0.0.1:0", "--data-dir", data}, tt.args...)
		code, _, errOut := runCLI(t, nil, args...)
		if code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("outpost %q: exit %d, stderr %q; want exit 1 and %q", tt.args, code, errOut, tt.want)
		}
		if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("outpost %q: data dir: %v, want none created", tt.args, err)
		}
	}
}
