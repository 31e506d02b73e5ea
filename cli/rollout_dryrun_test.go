package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRolloutCreateDryRunUploadsNothing runs a dry run against a real
// control plane: it shows the batches, and afterwards the artifact store
// is empty and there is no rollout.
func TestRolloutCreateDryRunUploadsNothing(t *testing.T) {
	dir := t.TempDir()
	_, addr, admin := startControlPlane(t, dir)
	env := map[string]string{controlPlaneEnv: addr, credentialEnv: admin}
	if code, _, errOut := runCLI(t, env, "node", "apply", "-f", writeFile(t, "nodes.yaml", inventoryYAML)); code != 0 {
		t.Fatalf("node apply: exit %d, stderr %q", code, errOut)
	}
	planPath, _ := writePlan(t, planYAML, 3*uploadChunk)

	code, out, errOut := runCLI(t, env, "rollout", "create", "-f", planPath, "--dry-run")
	if code != 0 || !strings.Contains(out, "Dry run: nothing was created") || !strings.Contains(out, "node-01") {
		t.Fatalf("dry run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(errOut, "uploaded") {
		t.Errorf("dry run says it uploaded: %q", errOut)
	}
	var stored []string
	filepath.WalkDir(filepath.Join(dir, "data", "artifacts"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			stored = append(stored, p)
		}
		return nil
	})
	if len(stored) > 0 {
		t.Errorf("the dry run stored files in the artifact store: %q", stored)
	}
	if code, out, errOut := runCLI(t, env, "rollout", "list"); code != 0 || out != "" {
		t.Errorf("rollout list after a dry run: exit %d, stdout %q, stderr %q; want no rollouts", code, out, errOut)
	}
}
