package deployer

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// deadDeployment leaves on f's node what a deployment whose gateway died
// mid-upload leaves: its lock and a partial release.
func deadDeployment(t *testing.T, f *fixture, holder LockInfo) string {
	t.Helper()
	partial := filepath.Join(f.path, "releases", holder.Release+".partial")
	for _, d := range []string{partial, filepath.Join(f.path, ".outpost")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(partial, "half-uploaded.tar.gz"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	content := lockContentFor(holder)
	if err := os.WriteFile(filepath.Join(f.path, ".outpost", "lock"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return content
}

func TestDeployTakesOverTheLockItWasGiven(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		rel := serviceRelease(t, t.TempDir(), "r1", true, 0)
		job := f.job("r1", rel)
		job.AssignmentID, job.TakeoverLockOf = "ro-r1-srv-e7-9", "ro-r1-srv-e5-2"
		deadDeployment(t, f, LockInfo{Owner: "cp-1/ro-r1", Rollout: "ro-r1", Release: "r1", Epoch: 5,
			Time: time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond), Assignment: "ro-r1-srv-e5-2"})

		res, evs := f.deploy(t, job)
		if res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			t.Fatalf("deploy = %v at %v: %v", res.State, res.Step, res.Err)
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if _, err := os.Lstat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left after the deployment: %v", err)
		}
		if _, err := os.Stat(filepath.Join(f.path, "releases", "r1.partial")); !os.IsNotExist(err) {
			t.Errorf("the dead deployment's partial release is still there: %v", err)
		}
		saidSo := false
		for _, ev := range evs.list() {
			if ev.GetStep() == outpostv1.Step_STEP_LOCK && ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED &&
				strings.Contains(ev.GetDetail(), "took over the lock of assignment ro-r1-srv-e5-2") {
				saidSo = true
			}
		}
		if !saidSo {
			t.Errorf("the lock step does not say it took over the lock; events %v", evs.steps())
		}
	})
}

func TestDeployTakesOverNoOtherLock(t *testing.T) {
	holder := LockInfo{Owner: "cp-1/ro-r1", Rollout: "ro-r1", Release: "r1", Epoch: 5, Time: time.Now().UTC().Truncate(time.Millisecond), Assignment: "a-old"}
	tests := []struct {
		name     string
		takeover string
		holder   func(LockInfo) LockInfo
		active   bool // the holder's activation still runs
		wantErr  string
	}{
		{name: "not told to", takeover: "", wantErr: "node is locked"},
		{name: "another assignment", takeover: "a-other", wantErr: "node is locked"},
		{name: "another rollout", takeover: "a-old", holder: func(h LockInfo) LockInfo { h.Rollout = "ro-other"; return h }, wantErr: "node is locked"},
		{name: "a newer epoch", takeover: "a-old", holder: func(h LockInfo) LockInfo { h.Epoch = 9; return h }, wantErr: "node is locked"},
		{name: "its activation still runs", takeover: "a-old", active: true, wantErr: "activation still runs"},
	}
	forEachTarget(t, func(t *testing.T, tg *target) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := newFixture(t, tg, "app-"+strings.ReplaceAll(tt.name, " ", "-"))
				h := holder
				if tt.holder != nil {
					h = tt.holder(h)
				}
				job := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
				job.AssignmentID, job.TakeoverLockOf = "a-new", tt.takeover
				content := deadDeployment(t, f, h)
				if tt.active {
					// A process that exists on the node (the node is this
					// machine): the test itself.
					if err := os.WriteFile(filepath.Join(f.path, ".outpost", "active"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				res, _ := f.deploy(t, job)
				if res.State != failed || res.Step != outpostv1.Step_STEP_LOCK || res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantErr) {
					t.Fatalf("deploy = %v at %v (%v), want FAILED at LOCK saying %q", res.State, res.Step, res.Err, tt.wantErr)
				}
				if b, err := os.ReadFile(filepath.Join(f.path, ".outpost", "lock")); err != nil || string(b) != content {
					t.Errorf("the held lock changed: %q, %v", b, err)
				}
			})
		}
	})
}

func TestDeployWhoseLockWasTakenOverDoesNotActivate(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		lock := filepath.Join(f.path, ".outpost", "lock")
		taker := lockContentFor(LockInfo{Owner: "cp-2/ro-r2", Rollout: "ro-r2", Release: "r2", Epoch: 8, Assignment: "a-new"})
		f.wrap = func(r *countingRemote) {
			// Mid-upload, as another gateway would once the control plane
			// gave this deployment up for gone.
			r.cutAfter = 1
			r.cut = func() {
				if err := os.WriteFile(lock, []byte(taker), 0o644); err != nil {
					t.Error(err)
				}
			}
		}
		res, _ := f.deploy(t, f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0)))
		if res.State != failed {
			t.Fatalf("deploy = %v at %v (%v), want FAILED before the switch", res.State, res.Step, res.Err)
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1 untouched", got)
		}
		if b, err := os.ReadFile(lock); err != nil || string(b) != taker {
			t.Errorf("the new holder's lock = %q, %v; want it left alone", b, err)
		}
		var le *LockedError
		if errors.As(res.Err, &le) {
			t.Errorf("error %v: the lock was taken, the failure is the activation's", res.Err)
		}
	})
}
