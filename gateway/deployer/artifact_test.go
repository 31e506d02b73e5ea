package deployer

import (
	"archive/tar"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/tarscan"
	"github.com/outposthq/outpost/internal/tarscan/tarscantest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// gzipBomb writes a tar.gz of one file of mib MiB of zeros, made of gzip
// members concatenated (as gzip -d and GNU tar read them), so that a bomb
// of hundreds of MiB costs the test one MiB of compression.
func gzipBomb(t testing.TB, path string, mib int) release {
	t.Helper()
	return writeFile(t, path, tarscantest.ZerosTarGz(t, "zeros", 0o644, mib))
}

// TestDeployRefusesCompressionBomb deploys a real gzip bomb (256 MiB of
// zeros in about 256 KiB) with the default limits, and a release over a
// lowered size limit: both are refused before the node is contacted, with
// the sizes in the error.
func TestDeployRefusesCompressionBomb(t *testing.T) {
	dir := t.TempDir()
	bomb := gzipBomb(t, filepath.Join(dir, "bomb.tar.gz"), 256)
	big := serviceRelease(t, dir, "big", true, 2<<20)
	forEachTarget(t, func(t *testing.T, tg *target) {
		for _, tc := range []struct {
			name  string
			rel   release
			lim   tarscan.Limits
			limit tarscan.Limit
			says  []string
		}{
			{"bomb", bomb, tarscan.Limits{}, tarscan.LimitRatio, []string{"256.0 MiB (268435456 bytes)", "limit of 200 times", `"zeros"`}},
			{"over max_unpacked_bytes", big, tarscan.Limits{MaxUnpackedBytes: 1 << 20}, tarscan.LimitUnpackedBytes,
				[]string{"2.0 MiB (2097", "limit of 1.0 MiB (1048576 bytes)", `"blob"`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := newFixture(t, tg, "app")
				job := f.job("r1", tc.rel)
				job.Spec.TarLimits = tc.lim
				res, evs := f.deploy(t, job)
				var tl *tarscan.TooLargeError
				if res.State != failed || !errors.As(res.Err, &tl) || tl.Limit != tc.limit || !errors.Is(res.Err, ErrInvalidJob) {
					t.Fatalf("deploy = %v at %v (%v), want FAILED with a TooLargeError on limit %d", res.State, res.Step, res.Err, tc.limit)
				}
				for _, s := range tc.says {
					if !strings.Contains(res.Err.Error(), s) {
						t.Errorf("error %q does not say %q", res.Err, s)
					}
				}
				if f.dials() != 0 || evs.has(outpostv1.Step_STEP_UPLOAD, outpostv1.StepPhase_STEP_PHASE_STARTED) {
					t.Errorf("the node was contacted (%d dials) or an upload started", f.dials())
				}
				if _, err := os.Lstat(f.path); !os.IsNotExist(err) {
					t.Errorf("deploy path exists: %v", err)
				}
			})
		}
	})
}

// setuidRelease is the simulated service with a setuid-root binary and a
// world-writable setgid file, as in the hardening issue.
func setuidRelease(t testing.TB, dir string) release {
	t.Helper()
	return writeTar(t, filepath.Join(dir, "setuid.tar.gz"), true, []tarEntry{
		{hdr: tar.Header{Name: "VERSION", Typeflag: tar.TypeReg}, body: "r1\n"},
		{hdr: tar.Header{Name: "HEALTHY", Typeflag: tar.TypeReg}, body: "yes\n"},
		{hdr: tar.Header{Name: "bin/", Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "bin/start", Typeflag: tar.TypeReg, Mode: 0o755},
			body: "#!/bin/sh\nmkdir -p ../../.svc && pwd -P > ../../.svc/running\n"},
		{hdr: tar.Header{Name: "bin/stop", Typeflag: tar.TypeReg, Mode: 0o755}, body: "#!/bin/sh\nrm -f ../../.svc/running\n"},
		{hdr: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "#!/bin/sh\n"},
		{hdr: tar.Header{Name: "shared", Typeflag: tar.TypeReg, Mode: 0o2777}, body: "x\n"},
	})
}

// TestDeploySetuid refuses a tar with 4755 and 2777 entries unless the
// environment allows setuid, and then (deploying as root) keeps the bits.
// The allowed deployment runs first, so that a cached scan cannot let the
// refused one through.
func TestDeploySetuid(t *testing.T) {
	rel := setuidRelease(t, t.TempDir())
	forEachTarget(t, func(t *testing.T, tg *target) {
		f := newFixture(t, tg, "app")
		job := f.job("r1", rel)
		job.Spec.TarLimits.AllowSetuid = true
		f.mustDeploy(t, job)
		// The in-process fleet's tar never sets these bits; GNU tar as
		// root does, when it is not told otherwise.
		if os.Geteuid() == 0 && tg.name != "fleet-interp" {
			st, err := os.Stat(filepath.Join(f.path, "current", "bin", "su"))
			if err != nil || st.Mode()&fs.ModeSetuid == 0 {
				t.Errorf("allowed: bin/su = %v, %v; want setuid kept", st.Mode(), err)
			}
		}

		dials := f.dials()
		job = f.job("r2", rel)
		res, _ := f.deploy(t, job)
		var me *tarscan.ModeError
		if res.State != failed || !errors.As(res.Err, &me) || me.Entry != "bin/su" || !errors.Is(res.Err, ErrInvalidJob) {
			t.Fatalf("deploy = %v (%v), want FAILED with a ModeError on bin/su", res.State, res.Err)
		}
		for _, s := range []string{`"bin/su"`, "mode 4755", "setuid", "allow_setuid"} {
			if !strings.Contains(res.Err.Error(), s) {
				t.Errorf("error %q does not say %q", res.Err, s)
			}
		}
		if f.dials() != dials {
			t.Errorf("the node was contacted for the refused release")
		}
		if got := lsReleases(t, f.path); strings.Join(got, ",") != "r1" {
			t.Errorf("releases = %v, want only r1", got)
		}
	})
}

// TestUntarDropsModeBits runs the unpack step's tar command as root: the
// setuid, setgid and sticky bits of an archive that reached the node
// anyway are dropped and the umask applies, unless modes are kept.
func TestUntarDropsModeBits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as another user GNU tar never restores setuid bits; the case is root's")
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip(err)
	}
	rel := writeTar(t, filepath.Join(t.TempDir(), "a.tar.gz"), true, []tarEntry{
		{hdr: tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o2775}},
		{hdr: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "x"},
		{hdr: tar.Header{Name: "shared", Typeflag: tar.TypeReg, Mode: 0o2777}, body: "y"},
		{hdr: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
	})
	for _, tc := range []struct {
		keep bool
		want map[string]fs.FileMode
	}{
		{false, map[string]fs.FileMode{"bin": fs.ModeDir | 0o755, "bin/su": 0o755, "shared": 0o755, "tmp": fs.ModeDir | 0o755}},
		{true, map[string]fs.FileMode{"bin": fs.ModeDir | fs.ModeSetgid | 0o775, "bin/su": fs.ModeSetuid | 0o755,
			"shared": fs.ModeSetgid | 0o777, "tmp": fs.ModeDir | fs.ModeSticky | 0o777}},
	} {
		dir := t.TempDir()
		data, err := os.ReadFile(rel.Path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, artifactFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		var s script
		s.line(`umask 022`)
		s.line(`m() { echo "m $*" >&2; }`)
		s.set("T", dir)
		s.set("F", artifactFile)
		s.untar(`"$T/$F"`, `"$T"`, true, tc.keep, false)
		if out, err := exec.Command("/bin/sh", "-c", s.String()).CombinedOutput(); err != nil {
			t.Fatalf("keep %v: %v: %s", tc.keep, err, out)
		}
		for name, want := range tc.want {
			st, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode() != want {
				t.Errorf("keep %v: %s has mode %v, want %v", tc.keep, name, st.Mode(), want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, artifactFile)); !os.IsNotExist(err) {
			t.Errorf("keep %v: the archive was not removed: %v", tc.keep, err)
		}
	}
}

// TestPrecheckAutoFreeSpace: with min_free_bytes left to the deployer, a
// node must have twice what the tar unpacks to free, not twice the
// (compressed) upload, in both layouts.
func TestPrecheckAutoFreeSpace(t *testing.T) {
	const df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100000000 1000 2000000 1% /srv\n"
	free := int64(2000000 * 1024)
	for _, tc := range []struct {
		name     string
		unpacked int64
		need     int64 // 0: accepted
	}{
		{"small", 1 << 20, 0},
		{"unpacks to more than half the free space", 1 << 30, 2 << 30},
		{"unpacks to less than the upload", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dep := goldenDeployment()
			dep.spec.Precheck = Precheck{MaxDiskUsedPercent: 90}
			dep.art.unpacked = tc.unpacked
			dep.facts.df = df
			ip := &inplace{facts: inplaceFacts{df: df}}
			for layout, check := range map[string]func() (string, error){
				"releases": dep.precheckFacts,
				"inplace":  func() (string, error) { return dep.inplacePrecheck(ip) },
			} {
				_, err := check()
				var pe *PrecheckError
				switch {
				case tc.need == 0 && err != nil:
					t.Errorf("%s: precheck = %v, want accepted", layout, err)
				case tc.need != 0 && (!errors.As(err, &pe) || pe.MinFreeBytes != tc.need || pe.AvailableBytes != free):
					t.Errorf("%s: precheck = %v, want a PrecheckError needing %d", layout, err, tc.need)
				}
			}
		})
	}
}
