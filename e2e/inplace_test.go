package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// inplaceDir is the in-place deploy path. The simulated service's hooks
// run with the release as working directory and keep their state two
// levels up, so the fixed directory sits two levels below the fleet's
// service path, where the health endpoint looks.
const inplaceDir = e2etest.DeployPath + "/webapps/billing"

// inplacePlan deploys version in place, keeping two backups.
func inplacePlan(version string, healthy bool) *outpostv1.PlanSpec {
	spec := plan(version, healthy, &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%", MaxFailPercent: ptrInt32(100)})
	spec.Deploy = &outpostv1.PlanDeploy{Path: inplaceDir, Layout: "inplace", KeepReleases: 2}
	return spec
}

func ptrInt32(v int32) *int32 { return &v }

// inplaceState reads what an in-place host holds: the version in the
// fixed directory, the release recorded, and the backups kept.
func inplaceState(t *testing.T, root string) (version, release string, backups []string) {
	t.Helper()
	dir := filepath.Join(root, inplaceDir)
	if b, err := os.ReadFile(filepath.Join(dir, "VERSION")); err == nil {
		version = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".outpost", "release")); err == nil {
		release = strings.TrimSpace(string(b))
	}
	entries, _ := os.ReadDir(filepath.Join(dir, ".outpost", "backups"))
	for _, e := range entries {
		backups = append(backups, e.Name())
	}
	sort.Strings(backups)
	return version, release, backups
}

// inplaceHistory reads the deployment history of an in-place host.
func inplaceHistory(t *testing.T, root string) []e2etest.HistoryEntry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, inplaceDir, ".outpost", "history"))
	if err != nil {
		t.Fatal(err)
	}
	var out []e2etest.HistoryEntry
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e e2etest.HistoryEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("history line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// TestInplaceDeployFailureAndRestore deploys v1 and v2 into a fixed
// directory, then a broken v3 that fails its health check and is
// restored to v2 from the backup, then v4, which prunes the backups to
// two.
func TestInplaceDeployFailureAndRestore(t *testing.T) {
	s := newSystem(t, 3, oneDC)
	s.startGateway("gw", dc1)
	run := func(version string, healthy bool) *outpostv1.Rollout {
		t.Helper()
		_, digest := s.release(version, healthy)
		r := s.create(inplacePlan(version, healthy), digest)
		return s.waitDone(r.GetId())
	}
	var releases []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		done := run(v, true)
		if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || done.GetNodeCounts().GetSucceeded() != 3 {
			t.Fatalf("in place %s: %v %q", v, done.GetState(), done.GetMessage())
		}
		releases = append(releases, done.GetReleaseId())
	}
	for i, h := range s.fleet.Hosts() {
		version, release, backups := inplaceState(t, h.Root)
		if version != "2.0.0" || release != releases[1] || len(backups) != 2 ||
			!strings.HasSuffix(backups[0], "-none") || !strings.HasSuffix(backups[1], "-"+releases[0]) {
			t.Errorf("%s after v2: version %q release %q backups %v", h.Name, version, release, backups)
		}
		if _, err := os.Stat(filepath.Join(h.Root, inplaceDir, "releases")); err == nil {
			t.Errorf("%s: the in-place layout made a releases directory", h.Name)
		}
		if got := s.host(i).health; got != 200 {
			t.Errorf("%s: health %d after v2", h.Name, got)
		}
	}

	broken := run("3.0.0", false)
	if broken.GetNodeCounts().GetRolledBack() != 3 {
		t.Fatalf("broken v3: %v %q %v, want every node rolled back", broken.GetState(), broken.GetMessage(), broken.GetNodeCounts())
	}
	for i, h := range s.fleet.Hosts() {
		version, release, backups := inplaceState(t, h.Root)
		if version != "2.0.0" || release != releases[1] || len(backups) != 2 {
			t.Errorf("%s after the failed v3: version %q release %q backups %v; want v2 restored", h.Name, version, release, backups)
		}
		if got := s.host(i).health; got != 200 {
			t.Errorf("%s: health %d after the restore", h.Name, got)
		}
		if e2etest.Locked(h) {
			t.Errorf("%s: still locked", h.Name)
		}
		var actions []string
		for _, e := range inplaceHistory(t, h.Root) {
			actions = append(actions, e.Action+" "+e.Release+" "+resultWord(e.Result))
		}
		want := []string{"activate " + releases[0] + " succeeded", "activate " + releases[1] + " succeeded",
			"activate " + broken.GetReleaseId() + " failed", "rollback " + releases[1] + " succeeded"}
		if diff := cmp.Diff(want, actions); diff != "" {
			t.Errorf("%s: history (-want +got):\n%s", h.Name, diff)
		}
		rec := s.rolloutNodes(broken.GetId())[s.nodes[i].GetId()]
		if rec.GetStep() != outpostv1.Step_STEP_HEALTH || rec.GetPreviousRelease() != releases[1] {
			t.Errorf("%s: %v at %v, previous %q", h.Name, rec.GetState(), rec.GetStep(), rec.GetPreviousRelease())
		}
	}

	v4 := run("4.0.0", true)
	if v4.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || v4.GetNodeCounts().GetSucceeded() != 3 {
		t.Fatalf("v4: %v %q", v4.GetState(), v4.GetMessage())
	}
	for _, h := range s.fleet.Hosts() {
		version, _, backups := inplaceState(t, h.Root)
		if version != "4.0.0" || len(backups) != 2 || !strings.HasSuffix(backups[1], "-"+releases[1]) {
			t.Errorf("%s after v4: version %q backups %v; want the two newest kept", h.Name, version, backups)
		}
	}
}

// TestInplaceCanaryRollback rolls an in-place canary back from its
// backup when it turns unhealthy during the bake.
func TestInplaceCanaryRollback(t *testing.T) {
	s := newSystem(t, 3, oneDC)
	s.startGateway("gw", dc1)
	_, d1 := s.release("1.0.0", true)
	r1 := s.create(inplacePlan("1.0.0", true), d1)
	if done := s.waitDone(r1.GetId()); done.GetNodeCounts().GetSucceeded() != 3 {
		t.Fatalf("v1: %v %q %v", done.GetState(), done.GetMessage(), done.GetNodeCounts())
	}
	_, d2 := s.release("2.0.0", true)
	spec := inplacePlan("2.0.0", true)
	spec.Strategy = &outpostv1.PlanStrategy{Type: "canary", Bake: "1m", Batch: "100%"}
	spec.Health.Interval = "100ms"
	r2 := s.create(spec, d2)
	s.wait(r2.GetId(), "the canary to bake", func(r *outpostv1.Rollout) bool {
		return r.GetStages()[0].GetState() == outpostv1.StageState_STAGE_STATE_BAKING
	})
	canary := s.fleet.Hosts()[0]
	if v, _, _ := inplaceState(t, canary.Root); v != "2.0.0" {
		t.Fatalf("canary holds %q while baking", v)
	}
	if err := os.Remove(filepath.Join(canary.Root, inplaceDir, "HEALTHY")); err != nil {
		t.Fatal(err)
	}
	done := s.waitDone(r2.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK || done.GetNodeCounts().GetRolledBack() != 1 || done.GetNodeCounts().GetSkipped() != 2 {
		t.Fatalf("v2: %v %q %v", done.GetState(), done.GetMessage(), done.GetNodeCounts())
	}
	for i, h := range s.fleet.Hosts() {
		version, release, _ := inplaceState(t, h.Root)
		if version != "1.0.0" || release != r1.GetReleaseId() {
			t.Errorf("%s: version %q release %q, want v1 in place", h.Name, version, release)
		}
		if got := s.host(i).health; got != 200 {
			t.Errorf("%s: health %d", h.Name, got)
		}
	}
	hist := inplaceHistory(t, canary.Root)
	if last := hist[len(hist)-1]; last.Action != "rollback" || last.Release != r1.GetReleaseId() || last.Result != "succeeded" {
		t.Errorf("canary's last history line %+v", last)
	}
}
