package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const planYAML = `app: demo
artifact: {path: build/app-v1.tar.gz}
targets: {selector: {app: demo}}
deploy: {path: app}
hooks: {start: sh bin/start, stop: sh bin/stop}
health: {http: {port: 18080, path: /health}, timeout: 5s, interval: 500ms}
strategy: {type: rolling, batch: 5, max_fail_percent: 10}
`

// writePlan writes a plan and its artifact (size bytes) into a fresh
// directory, the artifact in a subdirectory named relative to the plan.
func writePlan(t *testing.T, plan string, size int) (planPath, sha string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("outpost!"), size/8+1)[:size]
	if err := os.WriteFile(filepath.Join(dir, "build", "app-v1.tar.gz"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	planPath = filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(planPath, []byte(plan), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return planPath, hex.EncodeToString(sum[:])
}

func TestRolloutCreate(t *testing.T) {
	f := startFake(t)
	// Over two chunks, so the upload streams several messages.
	planPath, sha := writePlan(t, planYAML, 2*uploadChunk+123)

	code, out, errOut := f.run(t, "rollout", "create", "-f", planPath)
	if code != 0 || out != "r-101\n" {
		t.Fatalf("create: exit %d, stdout %q (want just the id), stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "uploaded app-v1.tar.gz (2.0 MiB)") ||
		!strings.Contains(errOut, "rollout r-101 created: demo revision 1, release r1-"+sha[:8]+", 3 nodes: 3 pending in 2 batches") {
		t.Errorf("create stderr = %q", errOut)
	}
	f.mu.Lock()
	if len(f.creates) != 1 || f.creates[0].GetArtifactSha256() != sha || f.creates[0].GetPlan().GetApp() != "demo" ||
		f.creates[0].GetRequestId() == "" || f.uploads != 1 {
		t.Errorf("control plane saw creates %v, uploads %d", f.creates, f.uploads)
	}
	f.mu.Unlock()

	// The artifact is stored now: the second create does not upload it again.
	code, out, errOut = f.run(t, "rollout", "create", "-f", planPath)
	if code != 0 || out != "r-102\n" || !strings.Contains(errOut, "is already stored") {
		t.Errorf("second create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.uploads != 1 {
		t.Errorf("%d uploads, want 1: a stored artifact must not be sent again", f.uploads)
	}
	if f.creates[0].GetRequestId() == f.creates[1].GetRequestId() {
		t.Errorf("two creates shared request_id %q", f.creates[0].GetRequestId())
	}
}

func TestRolloutCreateDryRun(t *testing.T) {
	f := startFake(t)
	planPath, _ := writePlan(t, planYAML, 100)
	code, out, errOut := f.run(t, "rollout", "create", "-f", planPath, "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"Dry run: nothing was created and no node was touched.", "3 nodes: 3 pending", "batch 1 of 2 (2): node-01 node-02\n", "batch 2 of 2 (1): node-03\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.rollouts) != 0 || !f.creates[0].GetDryRun() || f.uploads != 0 {
		t.Errorf("dry run stored %d rollouts (dry_run=%v), uploaded %d artifacts", len(f.rollouts), f.creates[0].GetDryRun(), f.uploads)
	}
}

func TestRolloutCreateWatch(t *testing.T) {
	f := startFake(t)
	f.watch = serve(watchScript(), -1, nil)
	planPath, _ := writePlan(t, planYAML, 100)
	code, out, _ := f.run(t, "rollout", "create", "-f", planPath, "--watch")
	if code != 1 {
		t.Errorf("create --watch of a rollout that aborts: exit %d, want 1", code)
	}
	if !strings.HasPrefix(out, "rollout r-101 created") || !strings.Contains(out, "ABORTED after 42s") {
		t.Errorf("create --watch stdout:\n%s", out)
	}
}

func TestRolloutCreateErrors(t *testing.T) {
	f := startFake(t)
	good, _ := writePlan(t, planYAML, 100)
	badPlan, _ := writePlan(t, strings.Replace(planYAML, "batch: 5", "batch: five", 1), 100)
	noArtifact, _ := writePlan(t, strings.Replace(planYAML, "app-v1.tar.gz", "missing.tar.gz", 1), 100)
	tests := []struct {
		name   string
		args   []string
		fail   error
		code   int
		stderr string
	}{
		{"no plan", []string{"rollout", "create"}, nil, 2, "-f PLAN is required"},
		{"watch and dry run", []string{"rollout", "create", "-f", good, "--watch", "--dry-run"}, nil, 2, "do not go together"},
		{"invalid plan", []string{"rollout", "create", "-f", badPlan}, nil, 1, "strategy.batch"},
		{"missing artifact", []string{"rollout", "create", "-f", noArtifact}, nil, 1, "missing.tar.gz: no such file"},
		{"rejected by the control plane", []string{"rollout", "create", "-f", good},
			status.Error(codes.InvalidArgument, "targets.selector: no node matches app=demo"), 1,
			"create rollout: rejected: targets.selector: no node matches app=demo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.fail["CreateRollout"] = tt.fail
			f.mu.Unlock()
			code, out, errOut := f.run(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and stderr containing %q", code, out, errOut, tt.code, tt.stderr)
			}
		})
	}
}

func TestArtifactName(t *testing.T) {
	tests := map[string]string{
		"/tmp/app-1.2.tar.gz": "app-1.2.tar.gz",
		"build/my app.war":    "my_app.war",
		"x/ünï.bin":           "_n_.bin",
	}
	for in, want := range tests {
		if got := artifactName(in); got != want {
			t.Errorf("artifactName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRolloutCreateRefusesOversizedPlans: a plan over a size limit is
// refused before anything is uploaded, and a 100 MB plan file without
// being read into memory.
func TestRolloutCreateRefusesOversizedPlans(t *testing.T) {
	f := startFake(t)
	bigHook, _ := writePlan(t, strings.Replace(planYAML, "stop: sh bin/stop", "stop: sh "+strings.Repeat("x", 20<<10), 1), 100)
	huge, _ := writePlan(t, planYAML, 100)
	// Sparse: 100 MB on paper, nothing on disk.
	if err := os.Truncate(huge, 100<<20); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		plan   string
		stderr string
	}{
		{"20 KiB hooks.stop", bigHook, "hooks.stop: 20483 bytes: at most 16384 (line 5)"},
		{"100 MB file", huge, "plan.yaml: 104857600 bytes: a plan is at most 262144 bytes"},
		{"endless stream", "/dev/zero", "/dev/zero: more than 262144 bytes: a plan is at most 262144 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			code, out, errOut := f.run(t, "rollout", "create", "-f", tt.plan)
			runtime.ReadMemStats(&after)
			if code != 1 || out != "" || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and stderr containing %q", code, out, errOut, tt.stderr)
			}
			// Everything the CLI and the fake server allocated meanwhile.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Errorf("refusing the plan allocated %d MiB; want it refused unread", alloc>>20)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.uploads != 0 || len(f.creates) != 0 {
		t.Errorf("control plane saw %d uploads and %d creates; want none", f.uploads, len(f.creates))
	}
}
