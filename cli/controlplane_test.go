package cli

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var readyAddr = regexp.MustCompile(`control plane ready.* addr=(127\.0\.0\.1:\d+)`)

func TestControlPlaneServesUntilInterrupted(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, nil, "controlplane", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"))
	d.err.waitFor(t, "control plane ready", 60*time.Second)
	m := readyAddr.FindStringSubmatch(d.err.String())
	if m == nil {
		t.Fatalf("no address in the ready log:\n%s", d.err.String())
	}
	env := map[string]string{controlPlaneEnv: m[1]}

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

	if code := d.stop(t); code != 0 {
		t.Errorf("controlplane exit %d after interrupt, want 0; stderr:\n%s", code, d.err.String())
	}
	if !strings.Contains(d.err.String(), "control plane stopped") {
		t.Errorf("no 'control plane stopped' in the log:\n%s", d.err.String())
	}
}
