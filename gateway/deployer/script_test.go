package deployer

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"os/exec"
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
	orphaned.progress = progressOrphaned
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
	inPlace := goldenDeployment()
	inPlace.spec.Layout = LayoutInplace
	ip := &inplace{facts: inplaceFacts{release: "r1.4.1", occupied: true}, backup: "20261101T100000.000000000Z-r1.4.1"}
	for name, got := range map[string]string{
		"inplace-lock.sh":      inPlace.inplaceLockScript(),
		"inplace-takeover.sh":  takeover.inplaceTakeOverScript(),
		"inplace-activate.sh":  inPlace.inplaceActivateScript(ip),
		"inplace-restore.sh":   inPlace.inplaceRestoreScript(ip),
		"lock.sh":              dep.lockScript(),
		"takeover.sh":          takeover.takeOverScript(),
		"activate.sh":          dep.activateScript(),
		"activate-present.sh":  present.activateScript(),
		"rollback.sh":          dep.rollbackScript(),
		"rollback-orphaned.sh": orphaned.rollbackScript(),
		"rollback-first.sh":    dep.rollbackFirstScript(),
		"rollback-lock.sh":     dep.rollbackLockScript("r1.4.1"),
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

// TestScriptDigest runs the verify step's checksum line under sh with
// OpenSSL present, present but failing, and absent: each gives the file's
// SHA-256, and a node with neither tool fails the step.
func TestScriptDigest(t *testing.T) {
	dir := t.TempDir()
	data := []byte("release bytes\n")
	if err := os.WriteFile(filepath.Join(dir, "a b.tar"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", sha256.Sum256(data))
	link := func(bin, name string) {
		t.Helper()
		real, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("%s not on this machine: %v", name, err)
		}
		if err := os.Symlink(real, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(t *testing.T, bin string) (string, error) {
		t.Helper()
		var s script
		s.line(`m() { echo "m $*" >&2; }`)
		s.set("T", dir)
		s.set("F", "a b.tar")
		s.digest(`"$T/$F"`)
		s.line(`printf '%s' "${s%% *}"`)
		cmd := exec.Command("/bin/sh", "-c", s.String())
		cmd.Env = []string{"PATH=" + bin}
		out, err := cmd.Output()
		return string(out), err
	}
	cases := []struct {
		name  string
		setup func(bin string)
	}{
		// Without sha256sum, so that only OpenSSL's output can pass.
		{"openssl only", func(bin string) { link(bin, "openssl") }},
		{"openssl fails", func(bin string) {
			link(bin, "sha256sum")
			if err := os.WriteFile(filepath.Join(bin, "openssl"), []byte("#!/bin/sh\necho broken\nexit 1\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"sha256sum only", func(bin string) { link(bin, "sha256sum") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := t.TempDir()
			c.setup(bin)
			got, err := run(t, bin)
			if err != nil || got != want {
				t.Errorf("digest = %q, %v; want %q", got, err, want)
			}
		})
	}
	t.Run("neither", func(t *testing.T) {
		got, err := run(t, t.TempDir())
		if err == nil {
			t.Errorf("digest with no tool = %q, want the step to fail", got)
		}
	})
}
