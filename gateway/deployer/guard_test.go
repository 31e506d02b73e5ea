package deployer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestGuardScript runs the deploy path guard under dash and bash against
// a tree of real directories and symlinks: the SSH user's home (with
// .ssh), the directory the session starts in, system directories of this
// machine reached through symlinks, paths that do not exist yet.
func TestGuardScript(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, "home", "deploy")
	login := filepath.Join(root, "login")
	for _, d := range []string{filepath.Join(home, ".ssh"), login, filepath.Join(root, "apps", "web", ".ssh"),
		filepath.Join(root, "apps", "api"), filepath.Join(root, "sub"), filepath.Join(root, "it's a dir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, filepath.Join(home, ".ssh", "authorized_keys"), "ssh-ed25519 AAAA")
	mustWrite(t, filepath.Join(root, "file"), "not a directory")
	for link, target := range map[string]string{
		"to-home":     home,
		"dots":        "sub/../home/deploy", // a target with ..
		"to-home-rel": "home/./deploy/",
		"to-login":    login,
		"to-root":     root,
		"to-etc":      "/etc",
		"to-usr":      "/usr",
		"to-var":      "/var",
		"to-slash":    "/",
		"to-web":      filepath.Join(root, "apps", "web"),
		"dangling":    filepath.Join(root, "nowhere"),
		"loop":        "loop",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	const ok = ""
	tests := []struct {
		path    string
		inplace bool
		real    string // the resolved path reported; "" for none
		reason  string // a part of the reason; ok when the guard passes
	}{
		{home, false, home, "must not be the SSH user's home directory"},
		{home, true, home, "must not be the SSH user's home directory"},
		{filepath.Join(root, "to-home"), true, home, "must not be the SSH user's home directory"},
		{filepath.Join(root, "to-home"), false, home, "must not be the SSH user's home directory"},
		{filepath.Join(root, "dots"), true, home, "must not be the SSH user's home directory"},
		{filepath.Join(root, "to-home-rel"), true, home, "must not be the SSH user's home directory"},
		{login, false, login, "must not be the SSH user's home directory"},
		{filepath.Join(root, "to-login"), true, login, "must not be the SSH user's home directory"},
		{filepath.Join(root, "home"), false, filepath.Join(root, "home"), "must not hold the SSH user's home directory (" + home + ")"},
		{root, true, root, "must not hold the SSH user's home directory"},
		{filepath.Join(root, "to-root"), false, root, "must not hold the SSH user's home directory"},
		{filepath.Join(home, ".ssh"), false, filepath.Join(home, ".ssh"), "must not be in an .ssh directory"},
		{filepath.Join(root, "to-home", ".ssh", "app"), false, filepath.Join(home, ".ssh", "app"), "must not be in an .ssh directory"},
		{filepath.Join(root, "apps", "web"), true, filepath.Join(root, "apps", "web"), "must not hold .ssh in the in-place layout"},
		{filepath.Join(root, "to-web"), true, filepath.Join(root, "apps", "web"), "must not hold .ssh in the in-place layout"},
		{filepath.Join(root, "to-etc"), false, "/etc", "must not be /etc, the system's configuration"},
		{filepath.Join(root, "to-etc", "ssh"), true, "/etc/ssh", "must not be in /etc"},
		{filepath.Join(root, "to-etc", "systemd", "system"), false, "/etc/systemd/system", "must not be in /etc"},
		{filepath.Join(root, "to-etc", "new-app", "deeper"), false, "/etc/new-app/deeper", "must not be in /etc"},
		{filepath.Join(root, "to-usr", "local"), true, "/usr/local", "must not be a directory directly in /usr"},
		{filepath.Join(root, "to-usr", "lib"), false, "/usr/lib", "must not be /usr/lib"},
		{filepath.Join(root, "to-var", "lib"), true, "/var/lib", "must not be a directory directly in /var"},
		{filepath.Join(root, "to-var"), true, "/var", "must not be /var"},
		{filepath.Join(root, "to-slash"), false, "/", "must not be /, the root directory"},
		{filepath.Join(root, "file"), false, "", "cannot be a directory: " + filepath.Join(root, "file") + " exists and is not one"},
		{filepath.Join(root, "file", "app"), true, "", "cannot be a directory: " + filepath.Join(root, "file") + " exists and is not one"},
		{filepath.Join(root, "dangling"), false, "", "cannot be a directory: " + filepath.Join(root, "dangling") + " exists and is not one"},
		{filepath.Join(root, "loop", "app"), false, "", "exists and is not one"},

		{filepath.Join(root, "apps", "web"), false, ok, ok}, // .ssh matters in place only
		{filepath.Join(root, "apps", "api"), true, ok, ok},
		{filepath.Join(root, "apps", "new", "deeper"), true, ok, ok},
		{filepath.Join(home, "app"), true, ok, ok},
		{filepath.Join(root, "to-home", "app", "new"), true, ok, ok},
		{filepath.Join(root, "it's a dir"), true, ok, ok},
		{filepath.Join(root, "to-usr", "local", "outpost-guard-test-app"), true, ok, ok},
		{filepath.Join(root, "to-var", "lib", "outpost-guard-test-app"), true, ok, ok},
	}
	for _, sh := range []string{"dash", "bash"} {
		bin, err := exec.LookPath(sh)
		if err != nil {
			t.Logf("%s not on this machine: %v", sh, err)
			continue
		}
		t.Run(sh, func(t *testing.T) {
			for _, tt := range tests {
				dep := &deployment{dir: tt.path}
				var s script
				s.set("P", tt.path)
				guard(&s, tt.inplace)
				s.line(`echo @passed`)
				cmd := exec.Command(bin, "-c", s.String())
				cmd.Dir = login
				cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
				out, err := cmd.Output()
				sec := splitSections(out)
				var exit *exec.ExitError
				switch {
				case tt.reason == ok:
					if _, passed := sec["passed"]; err != nil || !passed {
						t.Errorf("guard(%s, inplace %v) = %v, %q; want it to pass", tt.path, tt.inplace, err, out)
					}
				case !errors.As(err, &exit) || exit.ExitCode() != exitRefused:
					t.Errorf("guard(%s, inplace %v) = %v, %q; want exit %d", tt.path, tt.inplace, err, out, exitRefused)
				default:
					var pe *PathRefusedError
					if !errors.As(dep.refusedError(sec["refused"]), &pe) || pe.Real != tt.real || !strings.Contains(pe.Reason, tt.reason) {
						t.Errorf("guard(%s, inplace %v) refused %+v, want real %q and a reason containing %q", tt.path, tt.inplace, pe, tt.real, tt.reason)
					}
				}
			}
		})
	}
	// The guard only looked: nothing new appeared.
	for _, p := range []string{filepath.Join(root, "apps", "new"), "/usr/local/outpost-guard-test-app", "/etc/new-app"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after the guard ran: %v", p, err)
		}
	}
}

func TestPathRefusedErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  *PathRefusedError
		want string
	}{
		{&PathRefusedError{Path: "/home/deploy", Real: "/home/deploy", Reason: "must not be the SSH user's home directory"},
			"deploy path /home/deploy must not be the SSH user's home directory; nothing was changed on the node"},
		{&PathRefusedError{Path: "/srv/app", Real: "/home/deploy", Reason: "must not be the SSH user's home directory"},
			"deploy path /srv/app, which is /home/deploy on the node, must not be the SSH user's home directory; nothing was changed on the node"},
		{&PathRefusedError{Path: "/srv/x/app", Reason: "cannot be a directory: /srv/x exists and is not one"},
			"deploy path /srv/x/app cannot be a directory: /srv/x exists and is not one; nothing was changed on the node"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() =\n  %q\nwant\n  %q", got, tc.want)
		}
	}
}

// forEachHomeTarget runs fn against every kind of node with a login
// whose home is a directory of the test's: sshd with $HOME set to one,
// and the fleet hosts, whose home is their root.
func forEachHomeTarget(t *testing.T, fn func(t *testing.T, tg *target)) {
	t.Helper()
	t.Parallel()
	sshdHome := filepath.Join(t.TempDir(), "home", "deploy")
	if err := os.MkdirAll(sshdHome, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mk := range []func(*testing.T) *target{
		func(t *testing.T) *target { return sshdTargetHome(t, sshdHome) },
		fleetTarget, fleetInterpTarget,
	} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) { fn(t, tg) })
	}
}

// TestDeployRefusesHomeAndSSHDirs is issue #11's finding: a deploy path
// that is, or resolves to, the SSH user's home, or an in-place one that
// holds .ssh, is refused by the node before anything changes on it. The
// old deployer moved the home, .ssh included, into .outpost/backups.
func TestDeployRefusesHomeAndSSHDirs(t *testing.T) {
	forEachHomeTarget(t, func(t *testing.T, tg *target) {
		home := tg.home
		mustWrite(t, filepath.Join(home, ".ssh", "authorized_keys"), "ssh-ed25519 AAAA gateway\n")
		mustWrite(t, filepath.Join(home, "notes.txt"), "mine\n")
		web := filepath.Join(home, "srv", "web") // a directory of its own, but holding .ssh
		mustWrite(t, filepath.Join(web, ".ssh", "authorized_keys"), "ssh-ed25519 AAAA web\n")
		mustWrite(t, filepath.Join(web, "index.html"), "old\n")
		link := filepath.Join(home, "srv", "app")
		keys := filepath.Join(home, "srv", "keys")
		for l, target := range map[string]string{link: home, keys: filepath.Join(home, ".ssh")} {
			if err := os.Symlink(target, l); err != nil {
				t.Fatal(err)
			}
		}
		f := newFixture(t, tg, "unused")
		rel := serviceRelease(t, t.TempDir(), "r1", true, 0)
		for _, tc := range []struct {
			name   string
			path   string
			layout Layout
			real   string
			reason string
		}{
			{"home in place", home, LayoutInplace, home, "must not be the SSH user's home directory"},
			{"home with releases", home, LayoutReleases, home, "must not be the SSH user's home directory"},
			{"symlink to home in place", link, LayoutInplace, home, "must not be the SSH user's home directory"},
			{"directory holding the home", filepath.Dir(home), LayoutInplace, filepath.Dir(home), "must not hold the SSH user's home directory"},
			{"directory holding .ssh in place", web, LayoutInplace, web, "must not hold .ssh in the in-place layout"},
			{"in .ssh by a symlink", filepath.Join(keys, "app"), LayoutReleases, filepath.Join(home, ".ssh", "app"), "must not be in an .ssh directory"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := snapshotTree(t, home)
				job := f.job("r1", rel)
				job.Spec.Path, job.Spec.Layout = tc.path, tc.layout
				if tc.layout == LayoutInplace {
					job.Spec.Hooks, job.Spec.Health = Hooks{}, Health{}
				}
				res, evs := f.deploy(t, job)
				assertUnchanged(t, home, before) // .ssh and the rest still in place
				var pe *PathRefusedError
				if res.State != failed || res.Step != outpostv1.Step_STEP_LOCK || !errors.As(res.Err, &pe) {
					t.Fatalf("deploy to %s = %v at %v: %v; want FAILED at LOCK with a *PathRefusedError", tc.path, res.State, res.Step, res.Err)
				}
				if pe.Path != tc.path || pe.Real != tc.real || !strings.Contains(pe.Reason, tc.reason) {
					t.Errorf("refused %+v, want path %s, real %s, a reason containing %q", pe, tc.path, tc.real, tc.reason)
				}
				want := []string{"CONNECT:STARTED", "CONNECT:SUCCEEDED", "LOCK:STARTED", "LOCK:FAILED"}
				if got := evs.steps(); strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("events %v, want %v", got, want)
				}

				// A rollback of the same node is refused the same way.
				rb := f.d.Rollback(t.Context(), job, "r0", nil)
				if rb.State != failed || !errors.As(rb.Err, &pe) {
					t.Errorf("rollback in %s = %v: %v; want FAILED with a *PathRefusedError", tc.path, rb.State, rb.Err)
				}
				assertUnchanged(t, home, before)
			})
		}
	})
}
