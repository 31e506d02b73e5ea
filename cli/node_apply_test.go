package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const inventoryYAML = `nodes:
  - {id: node-01, address: 10.0.0.1, datacenter: dc-1, user: deploy, labels: {app: demo, tier: "1"}}
  - {id: node-02, address: "10.0.0.2:2222", datacenter: dc-2, user: deploy, labels: {app: demo, tier: "2"}}
  - {id: node-03, address: 10.0.0.3, datacenter: dc-1, user: deploy, labels: {app: other}}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNodeApply(t *testing.T) {
	f := startFake(t)
	inv := writeFile(t, "nodes.yaml", inventoryYAML)

	code, out, errOut := f.run(t, "node", "apply", "-f", inv)
	if code != 0 || out != "3 nodes: 3 created, 0 updated, 0 unchanged\n" {
		t.Fatalf("first apply: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = f.run(t, "node", "apply", "-f", inv)
	if code != 0 || out != "3 nodes: 0 created, 0 updated, 3 unchanged\n" {
		t.Errorf("second apply: exit %d, stdout %q", code, out)
	}
	changed := writeFile(t, "nodes.yaml", strings.Replace(inventoryYAML, "tier: \"2\"", "tier: \"3\"", 1))
	code, out, _ = f.run(t, "node", "apply", "-f", changed)
	if code != 0 || out != "3 nodes: 0 created, 1 updated, 2 unchanged\n" {
		t.Errorf("apply with one change: exit %d, stdout %q", code, out)
	}
	f.mu.Lock()
	addr := f.nodes["node-01"].GetAddress()
	f.mu.Unlock()
	if addr != "10.0.0.1:22" {
		t.Errorf("node-01 address sent as %q, want the default port added: 10.0.0.1:22", addr)
	}
}

func TestNodeApplyErrors(t *testing.T) {
	f := startFake(t)
	bad := writeFile(t, "bad.yaml", "nodes:\n  - {id: node-01, adress: 10.0.0.1, datacenter: dc-1}\n")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no file flag", []string{"node", "apply"}, 2, "-f FILE is required"},
		{"positional file", []string{"node", "apply", "nodes.yaml"}, 2, "did you mean -f nodes.yaml"},
		{"missing file", []string{"node", "apply", "-f", filepath.Join(t.TempDir(), "nope.yaml")}, 1, "no such file"},
		{"unknown field", []string{"node", "apply", "-f", bad}, 1, "nodes[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := f.run(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and stderr containing %q", code, errOut, tt.code, tt.stderr)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.nodes) != 0 {
		t.Errorf("invalid inventories reached the control plane: %d nodes stored", len(f.nodes))
	}
}

func TestNodeApplyStdin(t *testing.T) {
	f := startFake(t)
	var out, errOut strings.Builder
	code := Run(t.Context(), []string{"node", "apply", "-f", "-"}, &Env{
		Stdin: strings.NewReader(inventoryYAML), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string { return map[string]string{controlPlaneEnv: f.addr}[k] },
	})
	if code != 0 || !strings.Contains(out.String(), "3 created") {
		t.Errorf("apply from stdin: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}
