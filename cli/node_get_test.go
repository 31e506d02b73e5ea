package cli

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestNodeGetAndDelete runs node get and node delete against a real
// control plane.
func TestNodeGetAndDelete(t *testing.T) {
	dir := t.TempDir()
	_, addr, admin := startControlPlane(t, dir)
	env := map[string]string{controlPlaneEnv: addr, credentialEnv: admin}
	if code, _, errOut := runCLI(t, env, "node", "apply", "-f", writeFile(t, "nodes.yaml", inventoryYAML)); code != 0 {
		t.Fatalf("node apply: exit %d, stderr %q", code, errOut)
	}

	code, out, errOut := runCLI(t, env, "node", "get", "node-02")
	for _, want := range []string{"Node:       node-02", "Address:    10.0.0.2:2222", "Datacenter: dc-2", "User:       deploy", "Labels:     app=demo,tier=2"} {
		if code != 0 || !strings.Contains(out, want+"\n") {
			t.Errorf("node get: exit %d, stderr %q, stdout lacks %q:\n%s", code, errOut, want, out)
		}
	}
	code, out, _ = runCLI(t, env, "node", "get", "node-02", "-o", "json")
	var n outpostv1.Node
	if err := protojson.Unmarshal([]byte(out), &n); code != 0 || err != nil || n.GetAddress() != "10.0.0.2:2222" {
		t.Errorf("node get -o json: exit %d, %v, %s", code, err, out)
	}
	if code, out, _ := runCLI(t, env, "node", "list", "-o", "wide"); code != 0 || !strings.Contains(out, "USER") || !strings.Contains(out, "HOST KEYS") {
		t.Errorf("node list -o wide: exit %d:\n%s", code, out)
	}

	if code, out, errOut := runCLI(t, env, "node", "delete", "node-01", "node-03"); code != 0 || out != "node node-01 deleted\nnode node-03 deleted\n" {
		t.Errorf("node delete: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, env, "node", "get", "node-01"); code != 1 || !strings.Contains(errOut, "get node node-01: not found") {
		t.Errorf("node get of a deleted node: exit %d, stderr %q", code, errOut)
	}
	if code, out, errOut := runCLI(t, env, "node", "delete", "node-01"); code != 1 || out != "" || !strings.Contains(errOut, "delete node node-01: not found") {
		t.Errorf("node delete again: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := runCLI(t, env, "node", "list"); code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "node-02") {
		t.Errorf("node list after delete: exit %d:\n%s", code, out)
	}
	for _, args := range [][]string{{"node", "get"}, {"node", "get", "a", "b"}, {"node", "delete"}} {
		if code, _, _ := runCLI(t, env, args...); code != 2 {
			t.Errorf("outpost %q: exit %d, want 2", args, code)
		}
	}
}
