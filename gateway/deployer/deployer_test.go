package deployer

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/hookpolicy"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	succeeded      = outpostv1.NodeState_NODE_STATE_SUCCEEDED
	failed         = outpostv1.NodeState_NODE_STATE_FAILED
	rolledBack     = outpostv1.NodeState_NODE_STATE_ROLLED_BACK
	rollbackFailed = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED
)

func readHistory(t *testing.T, deployPath string) []historyEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployPath, ".outpost", "history"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []historyEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var h historyEntry
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("history line %q: %v", line, err)
		}
		out = append(out, h)
	}
	return out
}

// running returns the release dir the simulated service runs from, or "".
func running(t *testing.T, deployPath string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployPath, ".svc", "running"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestDeployHappyPath(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		r1 := serviceRelease(t, t.TempDir(), "r1", true, 0)
		r2 := serviceRelease(t, t.TempDir(), "r2", true, 0)

		res, evs := f.deploy(t, f.job("r1", r1))
		if res.State != succeeded || res.Release != "r1" || res.Previous != "" {
			t.Fatalf("first deploy = %+v, want SUCCEEDED r1 with no previous", res)
		}
		want := []string{
			"CONNECT:STARTED", "CONNECT:SUCCEEDED",
			"LOCK:STARTED", "LOCK:SUCCEEDED",
			"PRECHECK:STARTED", "PRECHECK:SUCCEEDED",
			"UPLOAD:STARTED", "UPLOAD:SUCCEEDED",
			"VERIFY:STARTED", "VERIFY:SUCCEEDED",
			"UNPACK:STARTED", "UNPACK:SUCCEEDED",
			"BEFORE_INSTALL:STARTED", "BEFORE_INSTALL:SUCCEEDED",
			"STOP:STARTED", "STOP:SUCCEEDED",
			"SWITCH:STARTED", "SWITCH:SUCCEEDED",
			"AFTER_INSTALL:STARTED", "AFTER_INSTALL:SUCCEEDED",
			"START:STARTED", "START:SUCCEEDED",
			"HEALTH:STARTED", "HEALTH:SUCCEEDED",
			"PRUNE:STARTED", "PRUNE:SUCCEEDED",
			"HISTORY:STARTED", "HISTORY:SUCCEEDED",
			"UNLOCK:STARTED", "UNLOCK:SUCCEEDED",
		}
		if diff := cmp.Diff(want, evs.steps()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if got := getStatus(f.healthURL()); got != http.StatusOK {
			t.Errorf("health = %d, want 200", got)
		}

		res = f.mustDeploy(t, f.job("r2", r2))
		if res.Release != "r2" || res.Previous != "r1" {
			t.Errorf("second deploy: release %q previous %q, want r2 r1", res.Release, res.Previous)
		}
		if got, want := running(t, f.path), filepath.Join(f.path, "releases", "r2"); got != want {
			t.Errorf("service runs %q, want %q", got, want)
		}
		if got := getStatus(f.healthURL()); got != http.StatusOK {
			t.Errorf("health = %d, want 200", got)
		}
		if got, want := lsReleases(t, f.path), []string{"r1", "r2"}; !cmp.Equal(got, want) {
			t.Errorf("releases = %v, want %v", got, want)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock still there after success: %v", err)
		}
		var got []string
		for _, h := range readHistory(t, f.path) {
			got = append(got, h.Action+" "+h.Release+" from "+h.Previous+" "+h.Result+" "+h.Rollout)
		}
		wantHist := []string{"activate r1 from  succeeded ro-r1", "activate r2 from r1 succeeded ro-r2"}
		if diff := cmp.Diff(wantHist, got); diff != "" {
			t.Errorf("history (-want +got):\n%s", diff)
		}
		// Few round trips: lock, activate, finish (upload is SFTP).
		for i, r := range f.remotes {
			if n := r.runs.Load(); n != 3 {
				t.Errorf("deployment %d ran %d remote commands, want 3", i+1, n)
			}
		}
	})
}

func TestDeployHealthFailureRollsBack(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", false, 0))
		// Long enough for one answer on a loaded machine: the error
		// gives the last answer even when the timeout cuts the last try.
		job.Spec.Health.Timeout = 2 * time.Second

		res, evs := f.deploy(t, job)
		if res.State != rolledBack || res.Step != outpostv1.Step_STEP_HEALTH {
			t.Fatalf("deploy = %v at %v (%v), want ROLLED_BACK at HEALTH\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if res.Release != "r1" || res.Previous != "r1" {
			t.Errorf("release %q previous %q, want r1 r1", res.Release, res.Previous)
		}
		if !strings.Contains(res.Err.Error(), "status 503") || !strings.Contains(res.Err.Error(), "rolled back to r1") {
			t.Errorf("error %q should give the health failure and the rollback", res.Err)
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if got, want := running(t, f.path), filepath.Join(f.path, "releases", "r1"); got != want {
			t.Errorf("service runs %q, want %q", got, want)
		}
		if got := getStatus(f.healthURL()); got != http.StatusOK {
			t.Errorf("health after rollback = %d, want 200", got)
		}
		if !evs.has(outpostv1.Step_STEP_ROLLBACK, outpostv1.StepPhase_STEP_PHASE_SUCCEEDED) {
			t.Errorf("no ROLLBACK event: %v", evs.steps())
		}
		hist := readHistory(t, f.path)
		if len(hist) != 3 || hist[2].Action != "rollback" || hist[2].Release != "r1" || hist[2].Result != "succeeded" {
			t.Errorf("history = %+v, want a final successful rollback to r1", hist)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left after rollback: %v", err)
		}
	})
}

func TestDeployStartHookFailureRollsBack(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0))
		// Fails for r2 only: the rollback's start of r1 must work.
		job.Spec.Hooks.Start = `if [ "$OUTPOST_RELEASE" = r2 ]; then echo "port in use" >&2; exit 3; fi; sh bin/start`
		res, evs := f.deploy(t, job)
		if res.State != rolledBack || res.Step != outpostv1.Step_STEP_START {
			t.Fatalf("deploy = %v at %v (%v), want ROLLED_BACK at START\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if !strings.Contains(res.Err.Error(), "port in use") {
			t.Errorf("error %q does not carry the hook's output", res.Err)
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if got := getStatus(f.healthURL()); got != http.StatusOK {
			t.Errorf("health after rollback = %d, want 200", got)
		}
	})
}

func TestDeployRollbackFailed(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", false, 0))
		job.Spec.Health.Timeout = 300 * time.Millisecond
		// The previous release no longer starts either.
		if err := os.Remove(filepath.Join(f.path, "releases", "r1", "HEALTHY")); err != nil {
			t.Fatal(err)
		}
		res, _ := f.deploy(t, job)
		if res.State != rollbackFailed || res.Step != outpostv1.Step_STEP_ROLLBACK {
			t.Fatalf("deploy = %v at %v (%v), want ROLLBACK_FAILED", res.State, res.Step, res.Err)
		}
		if !strings.Contains(res.Err.Error(), "ROLLBACK to r1 FAILED") {
			t.Errorf("error %q does not say the rollback failed", res.Err)
		}
		if logs := f.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "ROLLBACK FAILED") {
			t.Errorf("no ERROR log line for the failed rollback:\n%s", logs)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left: %v", err)
		}
	})
}

func TestDeployFirstDeployFailureIsClean(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", false, 0))
		job.Spec.Health.Timeout = 300 * time.Millisecond
		res, evs := f.deploy(t, job)
		if res.State != failed || res.Step != outpostv1.Step_STEP_HEALTH {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at HEALTH\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if res.Release != "" || res.Previous != "" {
			t.Errorf("release %q previous %q, want none", res.Release, res.Previous)
		}
		if got := readLink(t, f.path); got != "" {
			t.Errorf("current -> %q, want no current", got)
		}
		if got := lsReleases(t, f.path); len(got) != 0 {
			t.Errorf("releases = %v, want none", got)
		}
		if got := running(t, f.path); got != "" {
			t.Errorf("service still runs %q", got)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left: %v", err)
		}
	})
}

func TestDeployCorruptUpload(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		before := snapshotTree(t, f.path)

		rel := serviceRelease(t, t.TempDir(), "r2", true, 0)
		job := f.job("r2", rel)
		job.Release.Artifact.Sha256 = tg.corrupt(t, rel)
		res, evs := f.deploy(t, job)
		if res.State != failed || res.Step != outpostv1.Step_STEP_VERIFY {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at VERIFY\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		var ve *VerifyError
		if !errors.As(res.Err, &ve) || ve.Node == ve.Want {
			t.Errorf("error %v, want a *VerifyError with differing digests", res.Err)
		}
		if evs.has(outpostv1.Step_STEP_STOP, outpostv1.StepPhase_STEP_PHASE_STARTED) {
			t.Errorf("stop ran after a failed verify")
		}
		assertUnchanged(t, f.path, before)
	})
}

func TestDeployHostKeyMismatch(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		d, err := New(Config{Dial: tg.dialBadKey})
		if err != nil {
			t.Fatal(err)
		}
		evs := &events{}
		job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
		res := d.Deploy(context.Background(), job, evs.emit)
		if res.State != failed || res.Step != outpostv1.Step_STEP_CONNECT {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at CONNECT", res.State, res.Step, res.Err)
		}
		var hk *sshexec.HostKeyError
		if !errors.As(res.Err, &hk) {
			t.Errorf("error %v, want a *sshexec.HostKeyError", res.Err)
		}
		if _, err := os.Lstat(filepath.Join(f.path, ".outpost")); !os.IsNotExist(err) {
			t.Errorf("something ran on the node: %s/.outpost exists (%v)", f.path, err)
		}
		if diff := cmp.Diff([]string{"CONNECT:STARTED", "CONNECT:FAILED"}, evs.steps()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

func TestDeployDiskOverThreshold(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
		job.Spec.Precheck.MaxDiskUsedPercent = 1
		res, evs := f.deploy(t, job)
		if res.State != failed || res.Step != outpostv1.Step_STEP_PRECHECK {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at PRECHECK", res.State, res.Step, res.Err)
		}
		var pe *PrecheckError
		if !errors.As(res.Err, &pe) || pe.MaxUsedPercent != 1 || pe.UsedPercent <= 1 {
			t.Errorf("error %v, want a *PrecheckError with the figures", res.Err)
		}
		if !strings.Contains(res.Err.Error(), "above the 1% limit") {
			t.Errorf("error %q does not state the figures", res.Err)
		}
		if evs.has(outpostv1.Step_STEP_UPLOAD, outpostv1.StepPhase_STEP_PHASE_STARTED) {
			t.Errorf("upload started after a failed precheck")
		}
		for _, r := range f.remotes {
			if r.uploads.Load() != 0 {
				t.Errorf("an upload was made")
			}
		}
		if got := lsReleases(t, f.path); len(got) != 0 {
			t.Errorf("releases = %v, want none", got)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left: %v", err)
		}
	})
}

func TestDeployFreeSpaceCheck(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
		job.Spec.Precheck.MinFreeBytes = 1 << 62
		res, _ := f.deploy(t, job)
		var pe *PrecheckError
		if res.Step != outpostv1.Step_STEP_PRECHECK || !errors.As(res.Err, &pe) || !strings.Contains(res.Err.Error(), "needed") {
			t.Fatalf("deploy = %v at %v (%v), want a free-space PrecheckError", res.State, res.Step, res.Err)
		}
	})
}

func TestDeployConnectionKilledMidUpload(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		before := snapshotTree(t, f.path)

		rel := serviceRelease(t, t.TempDir(), "r2", true, 4<<20)
		reset := tg.cutUpload(t, f, 256<<10)
		res, evs := f.deploy(t, f.job("r2", rel))
		reset()
		if res.State != failed || res.Step != outpostv1.Step_STEP_UPLOAD {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at UPLOAD\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if f.dials() != 3 {
			t.Errorf("%d connections, want 3 (r1, r2, r2's cleanup)", f.dials())
		}
		if !evs.has(outpostv1.Step_STEP_UNLOCK, outpostv1.StepPhase_STEP_PHASE_SUCCEEDED) {
			t.Errorf("no successful unlock after reconnecting: %v", evs.steps())
		}
		assertUnchanged(t, f.path, before)

		// The next attempt works.
		f.mustDeploy(t, f.job("r2", rel))
	})
}

func TestDeployConcurrentConflict(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		rel := serviceRelease(t, t.TempDir(), "r1", true, 0)
		first := f.job("r1", rel)
		second := f.job("r1", rel)
		second.RolloutID, second.Owner = "ro-other", "gw-other"

		// The second deployment runs while the first holds the lock: from
		// inside the first's event callback, right after its lock step.
		var res2 Result
		var evs2 *events
		evs1 := &events{}
		res1 := f.d.Deploy(context.Background(), first, func(ev *outpostv1.NodeStepEvent) {
			evs1.emit(ev)
			if ev.GetStep() == outpostv1.Step_STEP_LOCK && ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED {
				res2, evs2 = f.deploy(t, second)
			}
		})
		if res1.State != succeeded {
			t.Fatalf("first deploy = %v: %v", res1.State, res1.Err)
		}
		if res2.State != failed || res2.Step != outpostv1.Step_STEP_LOCK {
			t.Fatalf("second deploy = %v at %v (%v), want FAILED at LOCK", res2.State, res2.Step, res2.Err)
		}
		var le *LockedError
		if !errors.As(res2.Err, &le) || le.Holder.Owner != "gw-test" || le.Holder.Rollout != "ro-r1" || le.Stale {
			t.Errorf("error %#v, want a fresh *LockedError naming gw-test and ro-r1", res2.Err)
		}
		for _, want := range []string{"gw-test", "ro-r1"} {
			if !strings.Contains(res2.Err.Error(), want) {
				t.Errorf("error %q does not name %s", res2.Err, want)
			}
		}
		if diff := cmp.Diff([]string{"CONNECT:STARTED", "CONNECT:SUCCEEDED", "LOCK:STARTED", "LOCK:FAILED"}, evs2.steps()); diff != "" {
			t.Errorf("second deploy's events (-want +got):\n%s", diff)
		}
	})
}

func TestDeployStaleLockIsReportedNotBroken(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		lock := filepath.Join(f.path, ".outpost", "lock")
		if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
			t.Fatal(err)
		}
		content := lockContentFor(LockInfo{Owner: "gw-dead", Rollout: "ro-old", Release: "r0", Epoch: 3, Time: time.Now().Add(-3 * time.Hour).UTC()})
		if err := os.WriteFile(lock, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		res, _ := f.deploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		var le *LockedError
		if !errors.As(res.Err, &le) || !le.Stale || le.Holder.Owner != "gw-dead" {
			t.Fatalf("deploy = %v (%v), want a stale *LockedError naming gw-dead", res.State, res.Err)
		}
		if !strings.Contains(res.Err.Error(), "stale") || !strings.Contains(res.Err.Error(), "ro-old") {
			t.Errorf("error %q should say stale and name the rollout", res.Err)
		}
		if b, err := os.ReadFile(lock); err != nil || string(b) != content {
			t.Errorf("lock changed or removed: %q, %v", b, err)
		}
	})
}

func TestDeployMaliciousTarball(t *testing.T) {
	dir := t.TempDir()
	bad := map[string][]tarEntry{
		"dotdot":   {{hdr: tar.Header{Name: "../evil", Typeflag: tar.TypeReg}, body: "x"}},
		"absolute": {{hdr: tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg}, body: "x"}},
		"symlink escape": {
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../../.."}},
			{hdr: tar.Header{Name: "link/evil", Typeflag: tar.TypeReg}, body: "x"},
		},
		"absolute symlink": {{hdr: tar.Header{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}},
		"device":           {{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}}},
	}
	forEachTarget(t, func(t *testing.T, tg *target) {
		for name, entries := range bad {
			t.Run(name, func(t *testing.T) {
				f := newFixture(t, tg, "app")
				rel := writeTar(t, filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".tar.gz"), true, entries)
				res, _ := f.deploy(t, f.job("r1", rel))
				var ue *UnsafeArtifactError
				if res.State != failed || !errors.As(res.Err, &ue) || !errors.Is(res.Err, ErrInvalidJob) {
					t.Fatalf("deploy = %v (%v), want FAILED with an *UnsafeArtifactError", res.State, res.Err)
				}
				if f.dials() != 0 {
					t.Errorf("the node was contacted %d time(s)", f.dials())
				}
				if _, err := os.Lstat(f.path); !os.IsNotExist(err) {
					t.Errorf("deploy path exists: %v", err)
				}
			})
		}
	})
}

func TestDeployPrune(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		dir := t.TempDir()
		deploy := func(id string, keep int) {
			t.Helper()
			job := f.job(id, serviceRelease(t, dir, id, true, 0))
			job.Spec.KeepReleases = keep
			f.mustDeploy(t, job)
		}
		for _, id := range []string{"r1", "r2", "r3", "r4"} {
			deploy(id, 2)
		}
		if got, want := lsReleases(t, f.path), []string{"r3", "r4"}; !cmp.Equal(got, want) {
			t.Errorf("keep 2: releases = %v, want %v", got, want)
		}
		// keep 1 still keeps the previous release, for rollback.
		deploy("r5", 1)
		if got, want := lsReleases(t, f.path), []string{"r4", "r5"}; !cmp.Equal(got, want) {
			t.Errorf("keep 1: releases = %v, want %v", got, want)
		}
		if got := readLink(t, f.path); got != "releases/r5" {
			t.Errorf("current -> %q", got)
		}
	})
}

func TestDeployDangerousHookRefused(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
		job.Spec.Hooks.AfterInstall = "rm -rf / --no-preserve-root"
		res, evs := f.deploy(t, job)
		var de *hookpolicy.DeniedError
		if res.State != failed || res.Step != outpostv1.Step_STEP_CONNECT || !errors.As(res.Err, &de) || !errors.Is(res.Err, ErrInvalidJob) {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at CONNECT with a *hookpolicy.DeniedError", res.State, res.Step, res.Err)
		}
		if !strings.Contains(res.Err.Error(), "after_install") {
			t.Errorf("error %q does not name the hook", res.Err)
		}
		if f.dials() != 0 {
			t.Errorf("the node was contacted")
		}
		if diff := cmp.Diff([]string{"CONNECT:STARTED", "CONNECT:FAILED"}, evs.steps()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

func TestDeployReactivatesPresentRelease(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		dir := t.TempDir()
		r1 := serviceRelease(t, dir, "r1", true, 0)
		f.mustDeploy(t, f.job("r1", r1))
		f.mustDeploy(t, f.job("r2", serviceRelease(t, dir, "r2", true, 0)))
		n := f.dials()
		res, evs := f.deploy(t, f.job("r1", r1))
		if res.State != succeeded || res.Previous != "r2" {
			t.Fatalf("re-activation = %+v", res)
		}
		if f.remotes[n].uploads.Load() != 0 {
			t.Errorf("re-activation uploaded the artifact again")
		}
		var details []string
		for _, ev := range evs.list() {
			if ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED && (ev.GetStep() == outpostv1.Step_STEP_UPLOAD || ev.GetStep() == outpostv1.Step_STEP_UNPACK) {
				details = append(details, ev.GetDetail())
			}
		}
		if diff := cmp.Diff([]string{"already present", "already present"}, details); diff != "" {
			t.Errorf("upload/unpack details (-want +got):\n%s", diff)
		}
		if got, want := running(t, f.path), filepath.Join(f.path, "releases", "r1"); got != want {
			t.Errorf("service runs %q, want %q", got, want)
		}
	})
}

func TestDeployCancelledBeforeStopLeavesNodeUnchanged(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		before := snapshotTree(t, f.path)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0))
		evs := &events{}
		res := f.d.Deploy(ctx, job, func(ev *outpostv1.NodeStepEvent) {
			evs.emit(ev)
			if ev.GetStep() == outpostv1.Step_STEP_UPLOAD && ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED {
				cancel() // the next command, activation, runs on a dead ctx
			}
		})
		if res.State != failed || res.Step != outpostv1.Step_STEP_VERIFY || !errors.Is(res.Err, context.Canceled) {
			t.Fatalf("deploy = %v at %v (%v), want FAILED at VERIFY, cancelled", res.State, res.Step, res.Err)
		}
		checkEventInvariants(t, evs.list(), job.Node.GetId(), job.RolloutID)
		if !evs.has(outpostv1.Step_STEP_UNLOCK, outpostv1.StepPhase_STEP_PHASE_SUCCEEDED) {
			t.Errorf("not unlocked after cancel: %v", evs.steps())
		}
		assertUnchanged(t, f.path, before)
	})
}

func TestDeploySingleFileArtifact(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		rel := writeFile(t, filepath.Join(t.TempDir(), "app.war"), []byte("PK\x03\x04 not really a war"))
		job := f.job("v1", rel)
		job.Release.Artifact.Unpack = outpostv1.Unpack_UNPACK_NONE
		job.Release.Artifact.Name = "app.war"
		job.Spec.Hooks = Hooks{Start: "test -f app.war"}
		job.Spec.Health = Health{Command: `test "$(cat app.war)" = "$(printf 'PK\003\004 not really a war')"`}
		f.mustDeploy(t, job)
		b, err := os.ReadFile(filepath.Join(f.path, "current", "app.war"))
		if err != nil || string(b) != "PK\x03\x04 not really a war" {
			t.Errorf("current/app.war = %q, %v", b, err)
		}
	})
}

func TestDeployHookEnvironmentAndDirs(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		dir := t.TempDir()
		record := func(name string) string {
			return `printf '%s %s %s %s\n' ` + name + ` "$(pwd -P)" "$OUTPOST_RELEASE" "$OUTPOST_ROLLOUT" >> "$OUTPOST_DEPLOY_PATH/hooks.txt"`
		}
		hooks := Hooks{
			BeforeInstall: record("before_install"),
			Stop:          record("stop"),
			AfterInstall:  record("after_install"),
			Start:         record("start"),
		}
		for _, id := range []string{"r1", "r2"} {
			job := f.job(id, serviceRelease(t, dir, id, true, 0))
			job.Spec.Hooks = hooks
			job.Spec.Health = Health{}
			f.mustDeploy(t, job)
		}
		b, err := os.ReadFile(filepath.Join(f.path, "hooks.txt"))
		if err != nil {
			t.Fatal(err)
		}
		rel := func(id string) string { return filepath.Join(f.path, "releases", id) }
		want := strings.Join([]string{
			"before_install " + rel("r1") + " r1 ro-r1",
			"stop " + rel("r1") + " r1 ro-r1", // first deployment: stop in the new release
			"after_install " + rel("r1") + " r1 ro-r1",
			"start " + rel("r1") + " r1 ro-r1",
			"before_install " + rel("r2") + " r2 ro-r2",
			"stop " + rel("r1") + " r1 ro-r2", // then in the running one
			"after_install " + rel("r2") + " r2 ro-r2",
			"start " + rel("r2") + " r2 ro-r2",
		}, "\n") + "\n"
		if diff := cmp.Diff(want, string(b)); diff != "" {
			t.Errorf("hook record (-want +got):\n%s", diff)
		}
	})
}

func TestDeployInvalidJobs(t *testing.T) {
	rel := serviceRelease(t, t.TempDir(), "r1", true, 0)
	base := func() Job {
		return Job{
			Node: &outpostv1.Node{Id: "n1", Address: "127.0.0.1:1", User: "u"},
			Release: &outpostv1.Release{Id: "r1", Artifact: &outpostv1.Artifact{
				Sha256: rel.SHA256, Size: rel.Size, Unpack: outpostv1.Unpack_UNPACK_TAR,
			}},
			ArtifactPath: rel.Path,
			Spec:         Spec{Path: "/srv/app"},
			RolloutID:    "ro", Owner: "gw",
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Job)
	}{
		{"release id with slash", func(j *Job) { j.Release.Id = "a/b" }},
		{"release id dot dot", func(j *Job) { j.Release.Id = ".." }},
		{"release id partial", func(j *Job) { j.Release.Id = "r1.partial" }},
		{"release id empty", func(j *Job) { j.Release.Id = "" }},
		{"no release", func(j *Job) { j.Release = nil }},
		{"no node", func(j *Job) { j.Node = nil }},
		{"path empty", func(j *Job) { j.Spec.Path = "" }},
		{"path newline", func(j *Job) { j.Spec.Path = "/srv/a\nb" }},
		{"path root", func(j *Job) { j.Spec.Path = "/" }},
		{"path dotdot", func(j *Job) { j.Spec.Path = "/srv/../etc" }},
		{"bad sha", func(j *Job) { j.Release.Artifact.Sha256 = "abc" }},
		{"upper-case sha", func(j *Job) { j.Release.Artifact.Sha256 = strings.ToUpper(rel.SHA256) }},
		{"size mismatch", func(j *Job) { j.Release.Artifact.Size++ }},
		{"no unpack", func(j *Job) { j.Release.Artifact.Unpack = outpostv1.Unpack_UNPACK_UNSPECIFIED }},
		{"none with bad name", func(j *Job) {
			j.Release.Artifact.Unpack, j.Release.Artifact.Name = outpostv1.Unpack_UNPACK_NONE, "../x"
		}},
		{"missing file", func(j *Job) { j.ArtifactPath = "/nonexistent/a.tgz" }},
		{"no owner", func(j *Job) { j.Owner = "" }},
		{"no rollout", func(j *Job) { j.RolloutID = "" }},
		{"negative keep", func(j *Job) { j.Spec.KeepReleases = -1 }},
		{"disk percent", func(j *Job) { j.Spec.Precheck.MaxDiskUsedPercent = 101 }},
		{"two health checks", func(j *Job) {
			j.Spec.Health = Health{HTTP: &HTTPCheck{Port: 80}, TCP: &TCPCheck{Port: 80}}
		}},
		{"bad port", func(j *Job) { j.Spec.Health = Health{TCP: &TCPCheck{Port: 70000}} }},
		{"dangerous stop", func(j *Job) { j.Spec.Hooks.Stop = "mkfs.ext4 /dev/sda1" }},
		{"dangerous health command", func(j *Job) { j.Spec.Health = Health{Command: "shutdown -r now"} }},
		{"interval above timeout", func(j *Job) {
			j.Spec.Health = Health{TCP: &TCPCheck{Port: 80}, Timeout: time.Second, Interval: time.Minute}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dials := 0
			d, err := New(Config{Dial: func(context.Context, *outpostv1.Node) (Remote, error) {
				dials++
				return nil, errNoDial
			}})
			if err != nil {
				t.Fatal(err)
			}
			job := base()
			tc.edit(&job)
			res := d.Deploy(context.Background(), job, nil)
			if res.State != failed || res.Step != outpostv1.Step_STEP_CONNECT || !errors.Is(res.Err, ErrInvalidJob) {
				t.Errorf("Deploy = %v at %v (%v), want FAILED at CONNECT with ErrInvalidJob", res.State, res.Step, res.Err)
			}
			if dials != 0 {
				t.Errorf("dialed %d times", dials)
			}
		})
	}
	// The base job is valid: it gets as far as dialing.
	d, _ := New(Config{Dial: func(context.Context, *outpostv1.Node) (Remote, error) { return nil, errNoDial }})
	if res := d.Deploy(context.Background(), base(), nil); !errors.Is(res.Err, errNoDial) {
		t.Errorf("base job: %v, want the dial error", res.Err)
	}
}

func TestDeployRemovesLeftoverPartial(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		// What a deployment whose connection dropped for good leaves.
		junk := filepath.Join(f.path, "releases", "r1.partial", artifactFile)
		if err := os.MkdirAll(filepath.Dir(junk), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(junk, []byte("half an upload"), 0o644); err != nil {
			t.Fatal(err)
		}
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		if got, want := lsReleases(t, f.path), []string{"r1"}; !cmp.Equal(got, want) {
			t.Errorf("releases = %v, want %v", got, want)
		}
	})
}

func TestDeployRelativePathResolvesAgainstHome(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		if !tg.homeInRoot {
			t.Skip("the login's home is outside the test's directories")
		}
		f := newFixture(t, tg, "apps/rel")
		job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
		job.Spec.Path = "apps/rel"
		res, evs := f.deploy(t, job)
		if res.State != succeeded {
			t.Fatalf("deploy = %v at %v: %v", res.State, res.Step, res.Err)
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("%s/current -> %q, want releases/r1", f.path, got)
		}
		if d := evs.list()[1].GetDetail(); !strings.HasSuffix(d, ":"+f.path) {
			t.Errorf("connect detail %q does not give the resolved path %s", d, f.path)
		}
	})
}

func TestDeployConnectionLostDuringActivationRollsBack(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))

		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0))
		marker := filepath.Join(f.path, "hook-started")
		job.Spec.Hooks.BeforeInstall = `touch "$OUTPOST_DEPLOY_PATH/hook-started"; sleep 3`
		done, deployed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			// Until the deployment ends (a loaded machine may take long
			// to get there), 60 s at most.
			for i := 0; i < 1200; i++ {
				if _, err := os.Stat(marker); err == nil {
					// The hook runs; the step markers printed before it
					// may still be on their way to the deployer. Cut once
					// they have arrived, well inside the hook's 3 s.
					time.Sleep(500 * time.Millisecond)
					tg.cut()
					return
				}
				select {
				case <-deployed:
					t.Error("the deployment ended before its hook was seen to start")
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			t.Error("the hook never started")
		}()
		res, evs := f.deploy(t, job)
		close(deployed)
		<-done
		if res.State != rolledBack || res.Step != outpostv1.Step_STEP_BEFORE_INSTALL {
			t.Fatalf("deploy = %v at %v (%v), want ROLLED_BACK at BEFORE_INSTALL\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if f.dials() != 3 {
			t.Errorf("%d connections, want 3 (r1, r2, the rollback's)", f.dials())
		}
		waited := false
		for _, ev := range evs.list() {
			if ev.GetStep() == outpostv1.Step_STEP_ROLLBACK && ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED &&
				strings.HasPrefix(ev.GetDetail(), "wait for the interrupted activation") {
				waited = true
			}
		}
		if !waited {
			t.Errorf("the rollback did not wait for the interrupted activation: %v", evs.steps())
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if got := getStatus(f.healthURL()); got != http.StatusOK {
			t.Errorf("health after rollback = %d, want 200", got)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left: %v", err)
		}
	})
}

func TestDeployStopHookFailureRestartsPrevious(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0))
		// Stops the service, then fails: the service must not stay down.
		job.Spec.Hooks.Stop = `sh bin/stop; echo "timed out waiting for shutdown" >&2; exit 1`
		res, evs := f.deploy(t, job)
		if res.State != rolledBack || res.Step != outpostv1.Step_STEP_STOP {
			t.Fatalf("deploy = %v at %v (%v), want ROLLED_BACK at STOP\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if !strings.Contains(res.Err.Error(), "timed out waiting for shutdown") {
			t.Errorf("error %q does not carry the hook's output", res.Err)
		}
		if evs.has(outpostv1.Step_STEP_SWITCH, outpostv1.StepPhase_STEP_PHASE_STARTED) {
			t.Errorf("switched after a failed stop")
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if got := getStatus(f.healthURL()); got != http.StatusOK {
			t.Errorf("health = %d, want 200 (previous release started again)", got)
		}
	})
}
