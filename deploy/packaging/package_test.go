package packaging

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the repository, from this package's directory.
const repoRoot = "../.."

// run runs a command and returns its combined output; it fails the test
// when the command fails.
func run(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestDebInstalls builds the packages, installs the .deb with dpkg, checks
// the user, the files, their modes and owners, the units (systemd-analyze
// verify, and the control plane started with the unit's own command line
// as the outpost user), then purges the package.
func TestDebInstalls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs a package: needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("needs dpkg")
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "outpost").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skip("the outpost package is installed on this machine already: not touching it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 18*time.Minute) // under make test's -timeout 20m
	defer cancel()

	cmd := exec.CommandContext(ctx, "make", "package")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	} else {
		t.Logf("make package:\n%s", out)
	}
	debs, _ := filepath.Glob(filepath.Join(repoRoot, "dist", "outpost_*_amd64.deb"))
	rpms, _ := filepath.Glob(filepath.Join(repoRoot, "dist", "outpost-*.x86_64.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("dist/ holds .deb %q and .rpm %q, want one of each", debs, rpms)
	}
	deb, rpm := debs[0], rpms[0]
	version := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(deb), "outpost_"), "_amd64.deb")

	// Leave the machine as it was: what the install creates goes again.
	_, userErr := user.Lookup("outpost")
	hadUser := userErr == nil
	hadState := exists("/var/lib/outpost")
	hadEtc := exists("/etc/outpost")
	t.Cleanup(func() {
		out, err := exec.Command("dpkg", "--purge", "outpost").CombinedOutput()
		if err != nil {
			t.Errorf("dpkg --purge outpost: %v\n%s", err, out)
		}
		if exists("/usr/bin/outpost") || exists("/usr/lib/systemd/system/outpost-controlplane.service") {
			t.Errorf("files left after purge")
		}
		if !hadState {
			os.RemoveAll("/var/lib/outpost")
		}
		if !hadEtc {
			os.RemoveAll("/etc/outpost")
		}
		if !hadUser {
			exec.Command("userdel", "outpost").Run()
			exec.Command("groupdel", "outpost").Run()
		}
	})
	t.Logf("%s", run(t, ctx, "dpkg", "-i", deb))

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command("/usr/bin/outpost", "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), version) {
			t.Errorf("outpost --version = %q, %v; want %s in it", out, err, version)
		}
		out, err = exec.Command("/usr/bin/outpost", "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), version) {
			t.Errorf("outpost version = %q, %v; want %s in it (set by make package's LDFLAGS)", out, err, version)
		}
	})

	t.Run("user", func(t *testing.T) {
		u, err := user.Lookup("outpost")
		if err != nil {
			t.Fatalf("user outpost: %v", err)
		}
		g, err := user.LookupGroup("outpost")
		if err != nil {
			t.Fatalf("group outpost: %v", err)
		}
		if u.Gid != g.Gid || u.HomeDir != "/var/lib/outpost" {
			t.Errorf("user outpost = %+v, want group outpost (%s), home /var/lib/outpost", u, g.Gid)
		}
		if uid, _ := strconv.Atoi(u.Uid); uid == 0 || uid >= 1000 {
			t.Errorf("user outpost has uid %d, want a system uid", uid)
		}
		line := run(t, ctx, "getent", "passwd", "outpost")
		if !strings.HasSuffix(strings.TrimSpace(line), "nologin") {
			t.Errorf("getent passwd outpost = %q, want a nologin shell", line)
		}
	})

	t.Run("files", func(t *testing.T) {
		for _, f := range []struct {
			path        string
			mode        fs.FileMode
			owner, grp  string
			wantDir     bool
			conffile    bool
			description string
		}{
			{path: "/usr/bin/outpost", mode: 0o755, owner: "root", grp: "root"},
			{path: "/usr/lib/systemd/system/outpost-controlplane.service", mode: 0o644, owner: "root", grp: "root"},
			{path: "/usr/lib/systemd/system/outpost-gateway.service", mode: 0o644, owner: "root", grp: "root"},
			{path: "/usr/lib/sysusers.d/outpost.conf", mode: 0o644, owner: "root", grp: "root"},
			{path: "/usr/lib/tmpfiles.d/outpost.conf", mode: 0o644, owner: "root", grp: "root"},
			{path: "/etc/outpost/controlplane.yaml", mode: 0o644, owner: "root", grp: "root", conffile: true},
			{path: "/etc/outpost/controlplane.env", mode: 0o644, owner: "root", grp: "root", conffile: true},
			{path: "/etc/outpost/gateway.env", mode: 0o644, owner: "root", grp: "root", conffile: true},
			{path: "/usr/share/doc/outpost/examples/controlplane-config.yaml", mode: 0o644, owner: "root", grp: "root"},
			{path: "/etc/outpost/gateway", mode: 0o750, owner: "root", grp: "outpost", wantDir: true},
			{path: "/var/lib/outpost", mode: 0o700, owner: "outpost", grp: "outpost", wantDir: true},
			{path: "/var/cache/outpost", mode: 0o700, owner: "outpost", grp: "outpost", wantDir: true},
		} {
			fi, err := os.Stat(f.path)
			if err != nil {
				t.Errorf("%v", err)
				continue
			}
			st := fi.Sys().(*syscall.Stat_t)
			owner, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
			grp, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
			if fi.Mode().Perm() != f.mode || fi.IsDir() != f.wantDir || owner == nil || owner.Username != f.owner || grp == nil || grp.Name != f.grp {
				t.Errorf("%s: mode %v, uid %d, gid %d; want %v %s:%s", f.path, fi.Mode(), st.Uid, st.Gid, f.mode, f.owner, f.grp)
			}
		}
		conffiles := run(t, ctx, "dpkg-query", "-W", "-f=${Conffiles}", "outpost")
		for _, c := range []string{"/etc/outpost/controlplane.yaml", "/etc/outpost/controlplane.env", "/etc/outpost/gateway.env"} {
			if !strings.Contains(conffiles, c+" ") {
				t.Errorf("%s is not a conffile: %q", c, conffiles)
			}
		}
		// Man pages and completions come from `outpost gen-man` and
		// `outpost completion`.
		for _, p := range []string{"/usr/share/man/man1/outpost.1.gz", "/usr/share/bash-completion/completions/outpost",
			"/usr/share/zsh/vendor-completions/_outpost", "/usr/share/fish/vendor_completions.d/outpost.fish"} {
			if fi, err := os.Stat(p); err != nil {
				t.Errorf("%v", err)
			} else if fi.Size() == 0 || fi.Mode().Perm() != 0o644 {
				t.Errorf("%s: %v, %d bytes", p, fi.Mode(), fi.Size())
			}
		}
	})

	t.Run("units verify", func(t *testing.T) {
		units := []string{"/usr/lib/systemd/system/outpost-controlplane.service", "/usr/lib/systemd/system/outpost-gateway.service"}
		// The units' Documentation= names the man pages `outpost gen-man`
		// writes: verify checks they are installed.
		verify := []string{"verify"}
		out, err := exec.CommandContext(ctx, "systemd-analyze", append(verify, units...)...).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "outpost") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
		// A unit sets User=outpost only once sysusers made it; the unit
		// names the configuration the package installs.
		for _, u := range units {
			text, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"User=outpost", "ExecStart=/usr/bin/outpost", "NoNewPrivileges=yes", "ProtectSystem=strict"} {
				if !bytes.Contains(text, []byte(want)) {
					t.Errorf("%s lacks %s", u, want)
				}
			}
		}
	})

	t.Run("control plane as shipped", func(t *testing.T) {
		if hadState {
			t.Skip("/var/lib/outpost existed before the test: not starting a control plane on it")
		}
		argv := execStart(t, "/usr/lib/systemd/system/outpost-controlplane.service", "--listen", "127.0.0.1:0")
		if !slices.Contains(argv, "--config") {
			t.Errorf("the control plane unit runs %q, without --config", argv)
		}
		// As systemd would: user outpost, the unit's own command line.
		cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=outpost", "--regid=outpost", "--init-groups", "--"}, argv...)...)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(45 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}()
		cred := "/var/lib/outpost/admin.pem"
		deadline := time.Now().Add(60 * time.Second)
		for !exists(cred) {
			select {
			case err := <-done:
				t.Fatalf("the control plane exited: %v\n%s", err, log.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 60s:\n%s", cred, log.String())
			}
		}
		fi, err := os.Stat(cred)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		u, _ := user.Lookup("outpost")
		if u == nil || strconv.Itoa(int(st.Uid)) != u.Uid || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v uid %d; want 0600 owned by outpost (an operator copies it with sudo install, README)", cred, fi.Mode(), st.Uid)
		}
	})

	t.Run("rpm lists the same files", func(t *testing.T) {
		if _, err := exec.LookPath("rpm"); err != nil {
			t.Skip("needs rpm (scripts/deps.sh installs it)")
		}
		debFiles := map[string]bool{}
		for _, line := range strings.Split(run(t, ctx, "dpkg-deb", "--contents", deb), "\n") {
			// drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/bin/outpost
			f := strings.Fields(line)
			if len(f) < 6 || strings.HasPrefix(f[0], "d") {
				continue
			}
			debFiles[strings.TrimPrefix(f[5], ".")] = true
		}
		rpmFiles := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(run(t, ctx, "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm)))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 || strings.HasPrefix(f[0], "d") {
				continue
			}
			// Fedora looks for zsh functions elsewhere than Debian.
			rpmFiles[strings.Replace(f[1], "/zsh/site-functions/", "/zsh/vendor-completions/", 1)] = true
		}
		if len(debFiles) < 10 || !mapsEqual(debFiles, rpmFiles) {
			t.Errorf(".deb files %v\n.rpm files %v\nwant the same", keys(debFiles), keys(rpmFiles))
		}
		conf := run(t, ctx, "rpm", "-qpc", rpm)
		for _, c := range []string{"/etc/outpost/controlplane.yaml", "/etc/outpost/gateway.env"} {
			if !strings.Contains(conf, c) {
				t.Errorf("rpm -qpc: %s is not a config file: %q", c, conf)
			}
		}
		scripts := run(t, ctx, "rpm", "-qp", "--scripts", rpm)
		if !strings.Contains(scripts, "systemd-sysusers") {
			t.Errorf("the .rpm's scripts do not create the user:\n%s", scripts)
		}
	})
}

// execStart returns a unit's ExecStart command line, with its $OPTIONS
// replaced by options.
func execStart(t *testing.T, unit string, options ...string) []string {
	t.Helper()
	text, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.ReplaceAll(string(text), "\\\n", " ")
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(joined)
	if m == nil {
		t.Fatalf("%s has no ExecStart", unit)
	}
	var argv []string
	for _, w := range strings.Fields(m[1]) {
		if w == "$OPTIONS" {
			argv = append(argv, options...)
			continue
		}
		if strings.ContainsAny(w, `$"'`) {
			t.Fatalf("%s: ExecStart word %q: this test splits on spaces only", unit, w)
		}
		argv = append(argv, w)
	}
	return argv
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
