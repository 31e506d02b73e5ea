package deployer

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// inplaceSpec is the fixture's spec in the in-place layout, without hooks
// or health check: these tests are about P's files.
func inplaceSpec(f *fixture) Spec {
	s := f.spec()
	s.Layout = LayoutInplace
	s.Hooks = Hooks{}
	s.Health = Health{}
	return s
}

// releaseFiles is the snapshot of dir without .outpost: the release in
// place, or a backup.
func releaseFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := snapshotTree(t, dir)
	for k := range out {
		if k == "." || k == ".outpost" || strings.HasPrefix(k, ".outpost/") {
			delete(out, k)
		}
	}
	return out
}

func backupNames(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(p, ".outpost", "backups"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func mustMove(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestInplaceTakeoverUndoesAnInterruptedSwitch leaves on an in-place node
// what a deployment of r2 whose gateway died leaves at each point of its
// switch, then deploys r2 again with the takeover the control plane
// names. Each time the takeover first puts P back as it was under r1, so
// the new deployment's backup is r1 whole, P ends up r2 exactly, and
// nothing of the dead switch is left behind.
func TestInplaceTakeoverUndoesAnInterruptedSwitch(t *testing.T) {
	dead := LockInfo{Owner: "gw-gone", Rollout: "ro-r2", Release: "r2", Epoch: 5,
		Time: time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond), Assignment: "ro-r2-srv-e5-2"}
	const deadBackup = "20260101T000000.000000000Z-r1"
	type leave func(t *testing.T, p string, journal func(phaseIn bool))
	moveAll := func(t *testing.T, p string) {
		for _, name := range []string{"VERSION", "bin", "HEALTHY"} {
			mustMove(t, filepath.Join(p, name), filepath.Join(p, ".outpost", "backups", deadBackup, name))
		}
	}
	tests := []struct {
		name     string
		leave    leave
		restored bool // the lock step says it put a backup back
		stale    bool // the journal is another deployment's: its backup is left alone
	}{
		{name: "before the switch", leave: func(t *testing.T, p string, _ func(bool)) {
			mustWrite(t, filepath.Join(p, ".outpost", "staging", "r2.partial", "r2.tar.gz"), "half")
		}},
		{name: "journal written, no backup yet", leave: func(t *testing.T, p string, journal func(bool)) {
			journal(false)
		}},
		{name: "in the first half", restored: true, leave: func(t *testing.T, p string, journal func(bool)) {
			journal(false)
			mustMove(t, filepath.Join(p, "VERSION"), filepath.Join(p, ".outpost", "backups", deadBackup, "VERSION"))
		}},
		{name: "in the second half", restored: true, leave: func(t *testing.T, p string, journal func(bool)) {
			journal(true)
			moveAll(t, p)
			mustWrite(t, filepath.Join(p, "VERSION"), "r2\n")
			mustWrite(t, filepath.Join(p, ".outpost", "staging", "r2", "bin", "start"), "#!/bin/sh\n")
		}},
		{name: "after the switch", restored: true, leave: func(t *testing.T, p string, journal func(bool)) {
			journal(true)
			moveAll(t, p)
			mustWrite(t, filepath.Join(p, "VERSION"), "r2\n")
			mustWrite(t, filepath.Join(p, "only-in-r2"), "x\n")
			mustWrite(t, filepath.Join(p, ".outpost", "release"), "r2\n")
		}},
		{name: "a stale journal of another deployment", stale: true, leave: func(t *testing.T, p string, _ func(bool)) {
			other := lockContentFor(LockInfo{Owner: "gw-x", Rollout: "ro-r0", Release: "r0", Epoch: 2, Assignment: "a-x"})
			b := filepath.Join(p, ".outpost", "backups", deadBackup)
			mustWrite(t, filepath.Join(b, "old"), "kept\n")
			mustWrite(t, filepath.Join(p, ".outpost", "switching"), b+"\nr0\n"+other+"\nin\n")
		}},
	}
	forEachTarget(t, func(t *testing.T, tg *target) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := newFixture(t, tg, "app-"+strings.ReplaceAll(tt.name, " ", "-"))
				j1 := f.job("r1", serviceRelease(t, t.TempDir(), "r1", true, 0))
				j1.Spec = inplaceSpec(f)
				f.mustDeploy(t, j1)
				r1Files := releaseFiles(t, f.path)
				before := backupNames(t, f.path)

				mustWrite(t, filepath.Join(f.path, ".outpost", "lock"), lockContentFor(dead))
				journal := func(phaseIn bool) {
					b := filepath.Join(f.path, ".outpost", "backups", deadBackup)
					j := b + "\nr1\n" + lockContentFor(dead) + "\n"
					if phaseIn {
						j += "in\n"
					}
					mustWrite(t, filepath.Join(f.path, ".outpost", "switching"), j)
				}
				tt.leave(t, f.path, journal)

				j2 := f.job("r2", serviceRelease(t, t.TempDir(), "r2", true, 0))
				j2.Spec = inplaceSpec(f)
				j2.AssignmentID, j2.TakeoverLockOf = "ro-r2-srv-e7-9", dead.Assignment
				res, evs := f.deploy(t, j2)
				if res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
					t.Fatalf("deploy = %v at %v: %v\nevents %v", res.State, res.Step, res.Err, evs.steps())
				}
				if res.Previous != "r1" {
					t.Errorf("previous release %q, want r1", res.Previous)
				}

				want := map[string]string{}
				for k, v := range r1Files {
					want[k] = v
				}
				want["VERSION"] = strings.Replace(want["VERSION"], "r1", "r2", 1)
				if diff := cmp.Diff(want, releaseFiles(t, f.path)); diff != "" {
					t.Errorf("P is not r2 exactly (-want +got):\n%s", diff)
				}
				if b, err := os.ReadFile(filepath.Join(f.path, ".outpost", "release")); err != nil || string(b) != "r2\n" {
					t.Errorf(".outpost/release = %q, %v", b, err)
				}
				backups := backupNames(t, f.path)
				if tt.stale {
					if got, err := os.ReadFile(filepath.Join(f.path, ".outpost", "backups", deadBackup, "old")); err != nil || string(got) != "kept\n" {
						t.Errorf("the stale journal's backup was touched: %q, %v", got, err)
					}
				} else if len(backups) != len(before)+1 {
					t.Errorf("backups %v, want those of before %v and one new", backups, before)
				}
				newest := backups[len(backups)-1]
				if !strings.HasSuffix(newest, "-r1") || newest == deadBackup {
					t.Fatalf("newest backup %q, want the new deployment's backup of r1 (backups %v)", newest, backups)
				}
				if diff := cmp.Diff(r1Files, releaseFiles(t, filepath.Join(f.path, ".outpost", "backups", newest))); diff != "" {
					t.Errorf("the backup of r1 is not r1 whole (-want +got):\n%s", diff)
				}
				// The new deployment's own switch replaced any journal and
				// its end removed it.
				for _, left := range []string{".outpost/switching", ".outpost/lock", ".outpost/staging/.takeover.failed", ".outpost/staging/r2", ".outpost/staging/r2.partial"} {
					if _, err := os.Lstat(filepath.Join(f.path, left)); !os.IsNotExist(err) {
						t.Errorf("%s left after the deployment: %v", left, err)
					}
				}
				var lockDetail string
				for _, ev := range evs.list() {
					if ev.GetStep() == outpostv1.Step_STEP_LOCK && ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED {
						lockDetail = ev.GetDetail()
					}
				}
				if !strings.Contains(lockDetail, "took over the lock of assignment "+dead.Assignment) {
					t.Errorf("lock step detail %q does not say it took the lock over", lockDetail)
				}
				if said := strings.Contains(lockDetail, "put back what its interrupted switch had moved (.outpost/backups/"+deadBackup+")"); said != tt.restored {
					t.Errorf("lock step detail %q: says it put the backup back = %v, want %v", lockDetail, said, tt.restored)
				}
			})
		}
	})
}
