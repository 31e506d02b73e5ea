package e2e

import (
	"bytes"
	"fmt"
	"github.com/outposthq/outpost/internal/tarscan/tarscantest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outposthq/outpost/cli"
)

// runCLIStderr runs one outpost command line like runCLI and returns its
// exit code and standard error.
func (s *system) runCLIStderr(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(name string) string {
		if name == "OUTPOST_CREDENTIAL" {
			return s.adminFile
		}
		return ""
	}
	code := cli.Run(ctxT(t), args, &cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: getenv})
	t.Logf("outpost %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stderr.String()
}

// TestCLIRefusesUnsafeArtifacts submits, with the outpost command line, a
// gzip bomb (256 MiB of zeros in about 256 KiB) and a tar holding a
// setuid-root file: the control plane refuses both when the rollout is
// created, saying why with the sizes, and no node is touched.
func TestCLIRefusesUnsafeArtifacts(t *testing.T) {
	s := newSystem(t, 2, oneDC)
	s.startGateway("gw", dc1)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		tar  []byte
		says []string
	}{
		{"bomb", tarscantest.ZerosTarGz(t, "zeros", 0o644, 256), []string{"artifact_sha256", "256.0 MiB (268435456 bytes)", "limit of 200 times"}},
		{"setuid", tarscantest.ZerosTarGz(t, "bin/su", 0o4755, 1), []string{"artifact_sha256", `"bin/su"`, "mode 4755", "allow_setuid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			art := filepath.Join(dir, tc.name+".tar.gz")
			if err := os.WriteFile(art, tc.tar, 0o644); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "plan-"+tc.name+".yaml")
			if err := os.WriteFile(file, fmt.Appendf(nil, planYAML, art), 0o644); err != nil {
				t.Fatal(err)
			}
			code, stderr := s.runCLIStderr(t, "rollout", "create", "-f", file, "--watch", "--controlplane", s.addr)
			if code == 0 {
				t.Fatalf("rollout create: exit 0, want the rollout refused")
			}
			for _, w := range tc.says {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
		})
	}
	for _, h := range s.fleet.Hosts() {
		if _, err := os.Lstat(filepath.Join(h.ServiceDir(), "releases")); !os.IsNotExist(err) {
			t.Errorf("%s: releases directory exists (%v): a node was deployed to", h.Name, err)
		}
	}
}
