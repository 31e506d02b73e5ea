package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/cli"
	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// planYAML is a rolling plan in the plan file format, batches of 2,
// aborting at the first failure.
const planYAML = `app: billing-api
change_id: E2E-1
artifact: {path: %s}
targets: {selector: {app: billing-api}}
deploy: {path: app}
hooks: {stop: sh bin/stop, start: sh bin/start}
health:
  http: {port: 18080, path: /health}
  timeout: 2s
  interval: 100ms
strategy: {type: rolling, batch: 2, max_fail_percent: 0}
`

// runCLI runs one outpost command line in this process, the way
// cli/outpost's main does, as the admin whose credential the control plane
// wrote, and returns its exit code and standard output.
func (s *system) runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(name string) string {
		if name == "OUTPOST_CREDENTIAL" {
			return s.adminFile
		}
		return ""
	}
	env := &cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: getenv}
	code := cli.Run(ctxT(t), args, env)
	t.Logf("outpost %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String()
}

// TestCLIRolloutCreateWatch drives the real system with the outpost
// command line: node apply, then rollout create --watch of a good release
// (exit 0) and of a broken one (exit 1), whose plain output has a line per
// node step and per failed node.
func TestCLIRolloutCreateWatch(t *testing.T) {
	const hosts = 4
	s := newSystem(t, hosts, alternateDC)
	s.twoGateways()
	dir := t.TempDir()

	// The inventory again, now pinning each host's key.
	var inv strings.Builder
	inv.WriteString("nodes:\n")
	for i, n := range s.nodes {
		key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.fleet.Hosts()[i].HostKey)))
		fmt.Fprintf(&inv, "  - {id: %s, address: %q, datacenter: %s, user: deploy, labels: {app: billing-api}, host_keys: [%q]}\n",
			n.GetId(), n.GetAddress(), n.GetDatacenter(), key)
	}
	invFile := filepath.Join(dir, "nodes.yaml")
	if err := os.WriteFile(invFile, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := s.runCLI(t, "node", "apply", "-f", invFile, "--controlplane", s.addr); code != 0 || !strings.Contains(out, "4 nodes: 0 created, 4 updated, 0 unchanged") {
		t.Fatalf("node apply: exit %d, output %q", code, out)
	}

	rollout := func(version string, healthy bool) (int, string) {
		rel, err := simfleet.BuildRelease(dir, version, healthy)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "plan-"+version+".yaml")
		if err := os.WriteFile(file, fmt.Appendf(nil, planYAML, "./"+filepath.Base(rel.Path)), 0o644); err != nil {
			t.Fatal(err)
		}
		return s.runCLI(t, "rollout", "create", "-f", file, "--watch", "--controlplane", s.addr)
	}

	code, out := rollout("1.0.0", true)
	if code != 0 {
		t.Fatalf("good release: exit %d, want 0", code)
	}
	for i := range hosts {
		id := e2etest.NodeID(i)
		for _, step := range []string{"connect", "upload", "switch", "health", "unlock"} {
			if !hasLine(out, id, step, "succeeded") {
				t.Errorf("good release: no %q line", id+" "+step+" succeeded")
			}
		}
		s.checkOn(i, "r1-"+releaseDigest(t, "1.0.0", true)[:8], 1)
	}
	if !strings.Contains(out, "SUCCEEDED") {
		t.Errorf("good release: output does not say SUCCEEDED:\n%s", out)
	}

	code, out = rollout("2.0.0", false)
	if code != 1 {
		t.Fatalf("broken release: exit %d, want 1", code)
	}
	v1 := "r1-" + releaseDigest(t, "1.0.0", true)[:8]
	// The first batch (srv-00001, srv-00002) fails health and rolls back;
	// the budget of 0% stops the rest.
	for i := range 2 {
		id := e2etest.NodeID(i)
		if !hasLine(out, id, "health FAILED", "not healthy") || !hasLine(out, id, "ROLLED_BACK", "rolled back to "+v1) {
			t.Errorf("broken release: no health FAILED and ROLLED_BACK lines for %s", id)
		}
		s.checkOn(i, v1, 1)
	}
	for i := 2; i < hosts; i++ {
		if id := e2etest.NodeID(i); strings.Contains(out, id+" ") {
			t.Errorf("broken release: %s was skipped, yet the output has lines for it", id)
		}
		if h := s.checkOn(i, v1, 1); len(h.history) != 1 {
			t.Errorf("%s: %d history lines, want 1", e2etest.NodeID(i), len(h.history))
		}
	}
	if !strings.Contains(out, "ABORTED") {
		t.Errorf("broken release: output does not say ABORTED:\n%s", out)
	}
}

// TestCLIWatchReturnsAtValidation runs the watch against the real control
// plane, whose WatchRollout keeps the stream open at PENDING_VALIDATION
// (only terminal states end it): `rollout create --watch` and `rollout
// watch` of a plan that requires validation must return there with exit
// 0 well within the test's bound, and once the rollout is accepted,
// `rollout watch` returns VALIDATED.
func TestCLIWatchReturnsAtValidation(t *testing.T) {
	const hosts = 2
	s := newSystem(t, hosts, alternateDC)
	s.twoGateways()
	dir := t.TempDir()
	rel, err := simfleet.BuildRelease(dir, "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "plan.yaml")
	plan := fmt.Sprintf(planYAML, "./"+filepath.Base(rel.Path)) + "validation: {required: true}\n"
	if err := os.WriteFile(file, []byte(plan), 0o644); err != nil {
		t.Fatal(err)
	}

	// The rollout reaches PENDING_VALIDATION while the watch follows it.
	code, out := s.runCLI(t, "rollout", "create", "-f", file, "--watch", "--controlplane", s.addr)
	m := regexp.MustCompile(`(?m)^rollout (r-\S+) created:`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create --watch: exit %d, no rollout id in:\n%s", code, out)
	}
	id := m[1]
	want := fmt.Sprintf("rollout %s PENDING_VALIDATION after ", id)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("%d nodes: %d succeeded", hosts, hosts)) {
		t.Fatalf("create --watch: exit %d, want 0 and a summary %q... with %d nodes succeeded", code, want, hosts)
	}

	// A watch that starts there returns at once from the snapshot.
	code, out = s.runCLI(t, "rollout", "watch", id, "--controlplane", s.addr)
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("watch at PENDING_VALIDATION: exit %d, want 0 and %q", code, want)
	}

	if code, _ = s.runCLI(t, "rollout", "validate", id, "--accept", "--comment", "smoke tests green", "--controlplane", s.addr); code != 0 {
		t.Fatalf("validate: exit %d", code)
	}
	code, out = s.runCLI(t, "rollout", "watch", id, "--controlplane", s.addr)
	if want := fmt.Sprintf("rollout %s VALIDATED after ", id); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("watch after validation: exit %d, want 0 and %q", code, want)
	}
}

// hasLine reports whether out has a line starting with node id and
// containing every word.
func hasLine(out, id string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, id+" ") {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

// releaseDigest rebuilds a release (the build is deterministic) for its digest.
func releaseDigest(t *testing.T, version string, healthy bool) string {
	t.Helper()
	rel, err := simfleet.BuildRelease(t.TempDir(), version, healthy)
	if err != nil {
		t.Fatal(err)
	}
	return rel.SHA256
}

// buildCLI builds the outpost binary into a fresh directory, so a test
// runs the command line exactly as operators do: its exit code included.
func buildCLI(t *testing.T) string {
	t.Helper()
	return e2etest.BuildOutpost(t, t.TempDir())
}

// TestCLIBinaryRefusesApproveOfRunningRollout runs the outpost binary:
// approving a rollout that waits for approval exits 0; approving it again
// once it is RUNNING (its datacenter has no gateway, so it stays so) exits
// non-zero, saying the rollout's state and what approve applies to, and
// changes nothing. The control plane allows self-approval, so that the
// admin is the same person approving twice.
func TestCLIBinaryRefusesApproveOfRunningRollout(t *testing.T) {
	bin := buildCLI(t)
	s := newSystem(t, 1, oneDC, withCPConfig(func(c *controlplane.Config) { c.AllowSelfApproval = true }))
	_, digest := s.release("1.0.0", true)
	spec := e2etest.RollingPlan("release-1.0.0.tar.gz", "1", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	r := s.create(spec, digest)
	approve := func() (int, string, string) {
		t.Helper()
		cmd := exec.CommandContext(ctxT(t), bin, "rollout", "approve", r.GetId(), "--controlplane", s.addr)
		cmd.Env = append(os.Environ(), "OUTPOST_CREDENTIAL="+s.adminFile)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("run outpost: %v", err)
		}
		t.Logf("outpost rollout approve %s: exit %d\nstdout:\n%s\nstderr:\n%s", r.GetId(), cmd.ProcessState.ExitCode(), stdout.String(), stderr.String())
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}

	if code, _, _ := approve(); code != 0 {
		t.Fatalf("approve of a PENDING_APPROVAL rollout: exit %d, want 0", code)
	}
	s.wait(r.GetId(), "RUNNING", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	})
	code, stdout, stderr := approve()
	want := "rollout " + r.GetId() + " is RUNNING; approve applies only to PENDING_APPROVAL"
	if code == 0 || stdout != "" || !strings.Contains(stderr, want) {
		t.Errorf("approve of a RUNNING rollout: exit %d, stdout %q, stderr %q; want a non-zero exit and stderr containing %q", code, stdout, stderr, want)
	}
	if got := s.wait(r.GetId(), "the rollout", func(*outpostv1.Rollout) bool { return true }); got.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Errorf("after the refused approve: %v, want RUNNING still", got.GetState())
	}
}
