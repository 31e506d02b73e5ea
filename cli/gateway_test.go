package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/pki"
)

func TestGatewayRunsUntilInterrupted(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewJoinToken([32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "join-token")
	if err := os.WriteFile(tokenFile, []byte(tok.Encode()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing listens at the control plane address: the gateway keeps
	// trying to join, and must still stop promptly when interrupted.
	d := startDaemon(t, nil, "gateway", "--controlplane", closedAddr(t), "--datacenter", "dc-1", "--name", "gw-test",
		"--ssh-key", key, "--known-hosts", filepath.Join(dir, "known_hosts"), "--cache-dir", filepath.Join(dir, "cache"),
		"--credential-file", filepath.Join(dir, "gateway.pem"), "--join-token-file", tokenFile, "--log-level", "debug")
	d.err.waitFor(t, "gateway starting", 10*time.Second)
	d.err.waitFor(t, "cannot reach the control plane to join", 10*time.Second)
	if code := d.stop(t); code != 0 {
		t.Errorf("gateway exit %d after interrupt, want 0; stderr:\n%s", code, d.err.String())
	}
	if !strings.Contains(d.err.String(), "gateway stopped") {
		t.Errorf("no 'gateway stopped' in the log:\n%s", d.err.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "cache")); err != nil {
		t.Errorf("cache dir: %v", err)
	}
	secret, _, _ := strings.Cut(strings.TrimPrefix(tok.Encode(), pki.JoinTokenPrefix), ".")
	if strings.Contains(d.err.String(), secret) {
		t.Errorf("the join token's secret is in the gateway's log:\n%s", d.err.String())
	}
}

// TestGatewayKnownHostsMustExist: a --known-hosts file that is not there
// is a usage error that says how to make one, before anything starts.
func TestGatewayKnownHostsMustExist(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir)
	missing := filepath.Join(dir, "known_hosts")
	code, _, errOut := runCLI(t, nil, "gateway", "--controlplane", closedAddr(t), "--datacenter", "dc-1", "--name", "gw-test",
		"--ssh-key", key, "--known-hosts", missing, "--credential-file", filepath.Join(dir, "gateway.pem"), "--join-token", "opjt_x")
	if code != 2 || !strings.Contains(errOut, "--known-hosts "+missing+": no such file") ||
		!strings.Contains(errOut, "ssh-keyscan -H HOST >> "+missing) || !strings.Contains(errOut, "touch "+missing) {
		t.Errorf("gateway with a missing known_hosts: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(errOut, "gateway starting") {
		t.Errorf("the gateway started before refusing: %q", errOut)
	}
}
