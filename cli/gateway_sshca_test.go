package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGatewaySSHCAFlags refuses bad certificate flags with a usage error,
// and a CA key that group or others may read at start, without printing
// a byte of it.
func TestGatewaySSHCAFlags(t *testing.T) {
	dir := t.TempDir()
	ca := writeKey(t, dir)
	base := []string{"gateway", "--datacenter", "dc-1", "--join-token", "t", "--credential-file", filepath.Join(dir, "gw.pem")}
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--ssh-agent", "--ssh-cert-validity", "2h"}, "need --ssh-ca-key"},
		{[]string{"--ssh-agent", "--ssh-cert-source-address", "10.0.0.1"}, "need --ssh-ca-key"},
		{[]string{"--ssh-ca-key", ca, "--ssh-cert-validity", "1m"}, "--ssh-cert-validity 1m0s is outside 5m0s..24h0m0s"},
		{[]string{"--ssh-ca-key", ca, "--ssh-cert-validity", "25h"}, "is outside"},
		{[]string{"--ssh-ca-key", ca, "--ssh-cert-validity", "-1h"}, "is outside"},
		{[]string{"--ssh-ca-key", ca, "--ssh-cert-source-address", "10.1.2.3/8"}, "did you mean 10.0.0.0/8"},
		{[]string{"--ssh-ca-key", ca, "--ssh-cert-source-address", "10.0.0.1,,10.0.0.2"}, "empty entry"},
		{[]string{"--ssh-ca-key", ca, "--ssh-cert-source-address", "gateway.example"}, "not an address or CIDR block"},
	} {
		args := append(append([]string{}, base...), tt.args...)
		code, _, errOut := runCLI(t, nil, args...)
		if code != 2 || !strings.Contains(errOut, tt.stderr) {
			t.Errorf("outpost %q: exit %d, stderr %q; want exit 2 and %q", args, code, errOut, tt.stderr)
		}
	}

	key, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ca, 0o640); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, base...), "--ssh-ca-key", ca, "--cache-dir", filepath.Join(dir, "cache"))
	code, _, errOut := runCLI(t, nil, args...)
	if code == 0 || !strings.Contains(errOut, "has mode 0640") || !strings.Contains(errOut, "chmod 600 "+ca) {
		t.Errorf("gateway with a CA key of mode 0640: exit %d, stderr %q; want a refusal naming the mode", code, errOut)
	}
	for _, line := range strings.Split(string(key), "\n")[1:3] {
		if strings.Contains(errOut, line) {
			t.Errorf("stderr holds a line of the CA key: %q", errOut)
		}
	}
}
