package deployer

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenDeployment is a deployment with awkward values: a deploy path with
// a space and a quote, hooks with quotes and $.
func goldenDeployment() *deployment {
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	d := &Deployer{cfg: Config{Now: func() time.Time { return at }}}
	return &deployment{
		d: d,
		job: Job{
			Node: &outpostv1.Node{Id: "srv-1", Address: "10.0.0.5:22", User: "deploy"},
			Release: &outpostv1.Release{Id: "r1.4.2", Artifact: &outpostv1.Artifact{
				Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Size: 1024, Unpack: outpostv1.Unpack_UNPACK_TAR,
			}},
			RolloutID: "ro-7", Owner: "gw-seoul-1", Epoch: 3,
		},
		spec: Spec{
			Path:         "/srv/bill's app",
			KeepReleases: 2,
			Hooks: Hooks{
				BeforeInstall: `echo "$HOME" > /dev/null`,
				Stop:          "sudo systemctl stop 'billing api'",
				Start:         "sudo systemctl start 'billing api'",
			},
		},
		dir:         "/srv/bill's app",
		lockContent: lockContentFor(LockInfo{Owner: "gw-seoul-1", Rollout: "ro-7", Release: "r1.4.2", Epoch: 3, Time: at}),
		art:         artifactInfo{gzip: true},
		facts:       nodeFacts{current: "releases/r1.4.1", currentIsDir: true, releases: []string{"r1.4.1", "r1.4.0", "r1.3.9"}},
		created:     true,
	}
}

// TestScriptsGolden pins the exact shell text sent to nodes, so that a
// change to it is reviewed as shell. Run with -update to rewrite.
func TestScriptsGolden(t *testing.T) {
	dep := goldenDeployment()
	present := goldenDeployment()
	present.facts.present = true
	orphaned := goldenDeployment()
	orphaned.orphaned = true
	finish, err := dep.finishScript(finishPlan{
		pruneStep: true,
		prune:     pruneSet(dep.facts.releases, "r1.4.2", "r1.4.1", 2),
		history:   []historyEntry{dep.historyEntry("activate", "r1.4.2", "releases/r1.4.1", "succeeded")},
	})
	if err != nil {
		t.Fatal(err)
	}
	abandon, err := dep.finishScript(finishPlan{remove: []string{dep.partialDir(), dep.releaseDir()}})
	if err != nil {
		t.Fatal(err)
	}
	takeover := goldenDeployment()
	takeover.heldRaw = lockContentFor(LockInfo{Owner: "cp-1/ro-7", Rollout: "ro-7", Release: "r1.4.2", Epoch: 2, Assignment: "ro-7-srv-1-e2-4"})
	for name, got := range map[string]string{
		"lock.sh":              dep.lockScript(),
		"takeover.sh":          takeover.takeOverScript(),
		"activate.sh":          dep.activateScript(),
		"activate-present.sh":  present.activateScript(),
		"rollback.sh":          dep.rollbackScript(),
		"rollback-orphaned.sh": orphaned.rollbackScript(),
		"rollback-first.sh":    dep.rollbackFirstScript(),
		"finish.sh":            finish,
		"abandon.sh":           abandon,
	} {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestScriptsGolden -update)", err)
		}
		if diff := cmp.Diff(string(want), got); diff != "" {
			t.Errorf("%s (-golden +got):\n%s", name, diff)
		}
	}
}

func TestFinishScriptRefusesOutsidePaths(t *testing.T) {
	dep := goldenDeployment()
	if _, err := dep.finishScript(finishPlan{remove: []string{"/srv/bill's app/current"}}); err == nil {
		t.Error("finishScript would remove a path outside releases/")
	}
}
