package deployer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// runObserve runs the observe script with the local POSIX sh, as sshd's
// login shell would, and parses what it prints.
func runObserve(t *testing.T, dir string, layout Layout, desired string) (*outpostv1.NodeObservation, error) {
	t.Helper()
	cmd, err := ObserveScript(dir, layout, desired)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", cmd).Output()
	if err != nil {
		t.Fatalf("observe script: %v", err)
	}
	return ParseObservation(out, layout)
}

func TestObserveScriptReleases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "it's app") // a quote in the path
	digest := strings.Repeat("ab", 32)
	mustWrite(t, filepath.Join(p, "releases", "r1-aaaa", digestFile), digest+"\n")
	mustWrite(t, filepath.Join(p, "releases", "r2-bbbb", digestFile), strings.Repeat("cd", 32)+"\n")
	if err := os.Symlink("releases/r1-aaaa", filepath.Join(p, "current")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(p, ".outpost", "history"), "{\"a\":1}\n{\"release\":\"r1-aaaa\"}\n")

	o, err := runObserve(t, p, LayoutReleases, "r1-aaaa")
	if err != nil {
		t.Fatal(err)
	}
	if o.GetRelease() != "r1-aaaa" || !o.GetReleasePresent() || o.GetSha256() != digest || o.GetLockHeld() ||
		o.GetLastHistory() != `{"release":"r1-aaaa"}` || o.GetCurrentOther() != "" {
		t.Errorf("clean node: got %v", o)
	}

	// Switched by hand, marker deleted, a lock of a dead pid left.
	if err := os.Remove(filepath.Join(p, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/r2-bbbb", filepath.Join(p, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(p, "releases", "r1-aaaa", digestFile)); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(p, ".outpost", "lock"), `{"owner":"cp/r-1","rollout":"r-1","assignment":"a-1","epoch":3,"time":"2026-01-02T03:04:05Z"}`)
	mustWrite(t, filepath.Join(p, ".outpost", "active"), "999999999\n")
	o, err = runObserve(t, p, LayoutReleases, "r1-aaaa")
	if err != nil {
		t.Fatal(err)
	}
	if o.GetRelease() != "r2-bbbb" || !o.GetReleasePresent() || o.GetSha256() != "" || !o.GetLockHeld() ||
		o.GetLockRollout() != "r-1" || o.GetLockAssignment() != "a-1" || o.GetLockActive() {
		t.Errorf("drifted node: got %v", o)
	}

	// The activation's pid alive: this test's shell.
	mustWrite(t, filepath.Join(p, ".outpost", "active"), itoa(os.Getpid()))
	if o, err = runObserve(t, p, LayoutReleases, "r1-aaaa"); err != nil || !o.GetLockActive() {
		t.Errorf("live activation: got %v, %v", o, err)
	}
}

func TestObserveScriptInplaceAndMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "app")
	o, err := runObserve(t, p, LayoutInplace, "")
	if err != nil || o.GetReleasePresent() || o.GetRelease() != "" {
		t.Errorf("no deploy path: got %v, %v", o, err)
	}
	mustWrite(t, filepath.Join(p, ".outpost", "release"), "r3-cccc\n")
	mustWrite(t, filepath.Join(p, ".hidden"), "x")
	o, err = runObserve(t, p, LayoutInplace, "r3-cccc")
	if err != nil || o.GetRelease() != "r3-cccc" || !o.GetReleasePresent() {
		t.Errorf("in place: got %v, %v", o, err)
	}
}

func TestObserveScriptRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ dir, desired string }{{"", "r1"}, {"a\x00b", "r1"}, {"/x", "../etc"}, {"/x", "r1 r2"}} {
		if _, err := ObserveScript(tc.dir, LayoutReleases, tc.desired); err == nil {
			t.Errorf("ObserveScript(%q, %q) = nil error", tc.dir, tc.desired)
		}
	}
}

func TestParseObservationHostile(t *testing.T) {
	ok := observeVersion + "\n@link releases/r1\n@present\n@digest " + strings.Repeat("a", 64) + "\n@end\n"
	if _, err := ParseObservation([]byte(ok), LayoutReleases); err != nil {
		t.Fatalf("valid output refused: %v", err)
	}
	if o, err := ParseObservation([]byte("Welcome to node 7!\n"+ok), LayoutReleases); err != nil || o.GetRelease() != "r1" {
		t.Errorf("banner before the output: %v, %v", o, err)
	}
	for name, out := range map[string]string{
		"empty":         "",
		"garbage":       "\x00\x01\xff\xfe",
		"huge":          observeVersion + "\n@history " + strings.Repeat("x", MaxObserveOutput) + "\n@end\n",
		"no end":        observeVersion + "\n@link releases/r1\n",
		"after end":     ok + "@link x\n",
		"repeated":      observeVersion + "\n@link releases/r1\n@link releases/r2\n@end\n",
		"unknown":       observeVersion + "\n@rootkit yes\n@end\n",
		"plain line":    observeVersion + "\nhello\n@end\n",
		"control chars": observeVersion + "\n@history a\x1b[2Jb\n@end\n",
		"not utf8":      observeVersion + "\n@history \xff\n@end\n",
		"long digest":   observeVersion + "\n@present\n@digest " + strings.Repeat("a", maxObservedDigest+1) + "\n@end\n",
		"digest alone":  observeVersion + "\n@digest abc\n@end\n",
		"wrong layout":  observeVersion + "\n@release r1\n@end\n",
		"present value": observeVersion + "\n@present yes\n@end\n",
		"nopath+more":   observeVersion + "\n@nopath\n@lock {}\n@end\n",
		"version glued": "x" + ok,
	} {
		if o, err := ParseObservation([]byte(out), LayoutReleases); err == nil {
			t.Errorf("%s: accepted as %v", name, o)
		}
	}
}

// FuzzParseObservation feeds the parser arbitrary node output. It must
// never panic, and what it accepts stays within the bounds the script
// promises: no control characters, every value bounded.
func FuzzParseObservation(f *testing.F) {
	f.Add([]byte(observeVersion+"\n@link releases/r1\n@present\n@digest abc\n@lock {\"owner\":\"x\"}\n@active\n@history {}\n@end\n"), false)
	f.Add([]byte(observeVersion+"\n@release r1\n@present\n@end\n"), true)
	f.Add([]byte(observeVersion+"\n@nopath\n@end\n"), false)
	f.Fuzz(func(t *testing.T, out []byte, inplace bool) {
		layout := LayoutReleases
		if inplace {
			layout = LayoutInplace
		}
		o, err := ParseObservation(out, layout)
		if err != nil {
			return
		}
		for _, s := range []string{o.GetRelease(), o.GetCurrentOther(), o.GetSha256(), o.GetLockOwner(), o.GetLockRollout(), o.GetLastHistory()} {
			if len(s) > maxObservedLock || !printable(s) {
				t.Errorf("accepted value %q", s)
			}
		}
		if o.GetRelease() != "" && !validReleaseID(o.GetRelease()) {
			t.Errorf("accepted release %q", o.GetRelease())
		}
	})
}
