package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGatewayRunsUntilInterrupted(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Nothing listens at the control plane address: the gateway keeps
	// retrying, and must still stop promptly when interrupted.
	d := startDaemon(t, nil, "gateway", "--controlplane", closedAddr(t), "--datacenter", "dc-1", "--name", "gw-test",
		"--ssh-key", key, "--known-hosts", filepath.Join(dir, "known_hosts"), "--cache-dir", filepath.Join(dir, "cache"))
	d.err.waitFor(t, "gateway starting", 10*time.Second)
	if code := d.stop(t); code != 0 {
		t.Errorf("gateway exit %d after interrupt, want 0; stderr:\n%s", code, d.err.String())
	}
	if !strings.Contains(d.err.String(), "gateway stopped") {
		t.Errorf("no 'gateway stopped' in the log:\n%s", d.err.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "cache")); err != nil {
		t.Errorf("cache dir: %v", err)
	}
}
