package deployer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestProgressAdvancesOnlyForward(t *testing.T) {
	dep := &deployment{}
	for _, step := range []struct {
		to, want           progress
		holdsLock, disturb bool
	}{
		{progressLocked, progressLocked, true, false},
		{progressNone, progressLocked, true, false},
		{progressLockLost, progressLockLost, true, false},
		{progressSwitched, progressSwitched, true, true},
		{progressStopped, progressSwitched, true, true},
		{progressOrphaned, progressOrphaned, true, true},
		{progressUnlocked, progressUnlocked, false, false},
		{progressLocked, progressUnlocked, false, false},
	} {
		dep.advance(step.to)
		if dep.progress != step.want {
			t.Errorf("advance(%v) = %v, want %v", step.to, dep.progress, step.want)
		}
		if got := dep.progress.holdsLock(); got != step.holdsLock {
			t.Errorf("%v.holdsLock() = %v, want %v", dep.progress, got, step.holdsLock)
		}
		if got := dep.progress.disturbed(); got != step.disturb {
			t.Errorf("%v.disturbed() = %v, want %v", dep.progress, got, step.disturb)
		}
	}
	for p := progressNone; p <= progressUnlocked; p++ {
		if s := p.String(); s == "" || strings.HasPrefix(s, "progress(") {
			t.Errorf("progress %d has no name: %q", int(p), s)
		}
	}
	if got := progress(99).String(); got != "progress(99)" {
		t.Errorf("progress(99).String() = %q", got)
	}
}

// TestDeployFailureAfterSwitchWithoutStopHookRollsBack: with no stop hook
// the switch is what disturbs the service, so a failure after it must
// switch current back. It used to be abandoned like a failure before the
// stop, which removed the new release that current pointed at.
func TestDeployFailureAfterSwitchWithoutStopHookRollsBack(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		f.mustDeploy(t, f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0)))
		job := f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0))
		job.Spec.Hooks.Stop = ""
		job.Spec.Hooks.AfterInstall = `echo "config missing" >&2; exit 3`
		res, evs := f.deploy(t, job)
		if res.State != outpostv1.NodeState_NODE_STATE_ROLLED_BACK || res.Step != outpostv1.Step_STEP_AFTER_INSTALL {
			t.Fatalf("deploy = %v at %v (%v), want ROLLED_BACK at AFTER_INSTALL\nevents: %v", res.State, res.Step, res.Err, evs.steps())
		}
		if got := readLink(t, f.path); got != "releases/r1" {
			t.Errorf("current -> %q, want releases/r1", got)
		}
		if _, err := os.Stat(filepath.Join(f.path, "current", "VERSION")); err != nil {
			t.Errorf("current does not resolve to a release: %v", err)
		}
		if _, err := os.Stat(filepath.Join(f.path, ".outpost", "lock")); !os.IsNotExist(err) {
			t.Errorf("lock left: %v", err)
		}
	})
}
