package deployer

import (
	"archive/tar"
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// uploads records what Config.OnUpload was told.
type uploads struct {
	mu            sync.Mutex
	bytes         map[string]int64
	rebuildFailed int
}

func (u *uploads) on(mode string, n int64, rebuildFailed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.bytes == nil {
		u.bytes = map[string]int64{}
	}
	u.bytes[mode] += n
	if rebuildFailed {
		u.rebuildFailed++
	}
}

func (u *uploads) take() (map[string]int64, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b, n := u.bytes, u.rebuildFailed
	u.bytes, u.rebuildFailed = nil, 0
	return b, n
}

// deltaFixture is a fixture on a real sshd whose jobs deploy app.jar
// (unpack none) with the gateway's cache holding every artifact written
// by jar.
type deltaFixture struct {
	*fixture
	up     uploads
	cached map[string]string // sha256 -> path
	verify string            // the last deployment's verify step detail
}

func newDeltaFixture(t *testing.T) *deltaFixture {
	t.Parallel()
	f := &deltaFixture{fixture: newFixture(t, sshdTarget(t), "app"), cached: map[string]string{}}
	f.d.cfg.OnUpload = f.up.on
	return f
}

func (f *deltaFixture) jar(t *testing.T, b []byte) release {
	rel := writeFile(t, filepath.Join(t.TempDir(), "app.jar"), b)
	f.cached[rel.SHA256] = rel.Path
	return rel
}

// deploy deploys rel as release id and returns the upload step's detail.
func (f *deltaFixture) deploy(t *testing.T, id string, rel release) string {
	t.Helper()
	job := f.job(id, rel)
	job.Release.Artifact.Unpack = outpostv1.Unpack_UNPACK_NONE
	job.Release.Artifact.Name = "app.jar"
	job.Spec.Hooks = Hooks{}
	job.Spec.Health = Health{Command: "test -f app.jar"}
	job.Base = func(sum string) (string, bool) { p, ok := f.cached[sum]; return p, ok }
	res, evs := f.fixture.deploy(t, job)
	if res.State != succeeded {
		t.Fatalf("deploy %s: %v at %v: %v", id, res.State, res.Step, res.Err)
	}
	got, err := os.ReadFile(filepath.Join(f.path, "current", "app.jar"))
	want, _ := os.ReadFile(rel.Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("deploy %s: current/app.jar differs from the artifact (%v)", id, err)
	}
	if _, err := os.Stat(filepath.Join(f.path, "current", deltaFile)); !os.IsNotExist(err) {
		t.Errorf("deploy %s: %s left in the release: %v", id, deltaFile, err)
	}
	upload := ""
	for _, ev := range evs.list() {
		if ev.GetPhase() != outpostv1.StepPhase_STEP_PHASE_SUCCEEDED {
			continue
		}
		switch ev.GetStep() {
		case outpostv1.Step_STEP_UPLOAD:
			upload = ev.GetDetail()
		case outpostv1.Step_STEP_VERIFY:
			f.verify = ev.GetDetail()
		}
	}
	if upload == "" {
		t.Fatalf("deploy %s: no upload step succeeded", id)
	}
	return upload
}

// rebuiltNote is the verify step's detail after a verified delta rebuild.
const rebuiltNote = "(checked as the delta rebuilt it)"

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// edit returns b with a few bytes changed and some inserted, as a
// rebuilt jar with two changed classes looks.
func edit(b []byte) []byte {
	out := append([]byte{}, b[:len(b)/3]...)
	out = append(out, []byte("a new class, compressed")...)
	out = append(out, b[len(b)/3:]...)
	copy(out[2*len(out)/3:], "changed bytes")
	return out
}

const deltaTestSize = 1 << 20

func TestDeltaUploadSendsOnlyChanges(t *testing.T) {
	f := newDeltaFixture(t)
	v1 := f.jar(t, randomBytes(1, deltaTestSize))
	detail := f.deploy(t, "v1", v1)
	if !strings.HasPrefix(detail, "full: sent 1.0 MiB") || !strings.Contains(detail, "no previous artifact on the node") {
		t.Errorf("first deployment's upload: %q, want a full upload for want of a previous artifact", detail)
	}
	if got, _ := f.up.take(); got[UploadFull] != deltaTestSize || got[UploadDelta] != 0 {
		t.Errorf("first deployment sent %v", got)
	}
	if want := "sha256 " + v1.SHA256; f.verify != want {
		t.Errorf("first deployment's verify: %q, want %q (the node hashed the upload)", f.verify, want)
	}

	v2 := f.jar(t, edit(randomBytes(1, deltaTestSize)))
	detail = f.deploy(t, "v2", v2)
	if !strings.HasPrefix(detail, "delta: sent ") || !strings.Contains(detail, "rebuilt from release v1") {
		t.Errorf("second deployment's upload: %q, want a delta from v1", detail)
	}
	got, failures := f.up.take()
	if got[UploadFull] != 0 || got[UploadDelta] == 0 || got[UploadDelta] > 8<<10 || failures != 0 {
		t.Errorf("second deployment sent %v (%d rebuild failures), want a delta of at most 8 KiB", got, failures)
	}
	// The rebuild's check is the verify step's: the node hashes once.
	if want := "sha256 " + v2.SHA256 + " " + rebuiltNote; f.verify != want {
		t.Errorf("second deployment's verify: %q, want %q", f.verify, want)
	}
	// The single file keeps its mode, as a full upload gives it.
	if fi, err := os.Stat(filepath.Join(f.path, "current", "app.jar")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("rebuilt app.jar: %v %v, want mode 0755", fi.Mode(), err)
	}
}

func TestDeltaUploadFallsBackWhenTheNodesFileDiffers(t *testing.T) {
	f := newDeltaFixture(t)
	v1 := f.jar(t, randomBytes(2, deltaTestSize))
	f.deploy(t, "v1", v1)
	f.up.take()
	// Damage the node's copy by hand, keeping its size: the delta built
	// against the gateway's copy then rebuilds a wrong file.
	node := filepath.Join(f.path, "releases", "v1", "app.jar")
	fh, err := os.OpenFile(node, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(bytes.Repeat([]byte{'X'}, 4096), deltaTestSize/2); err != nil {
		t.Fatal(err)
	}
	fh.Close()

	v2 := f.jar(t, edit(randomBytes(2, deltaTestSize)))
	detail := f.deploy(t, "v2", v2)
	if !strings.HasPrefix(detail, "full: sent 1.0 MiB") || !strings.Contains(detail, "the rebuilt file did not verify") {
		t.Errorf("upload: %q, want a full upload after the delta did not verify", detail)
	}
	if want := "sha256 " + v2.SHA256; f.verify != want {
		t.Errorf("verify after the fallback: %q, want %q (the node hashed the full upload)", f.verify, want)
	}
	got, failures := f.up.take()
	if got[UploadFull] != v2.Size || got[UploadDelta] == 0 || failures != 1 {
		t.Errorf("sent %v with %d rebuild failures, want a delta, one failure, then the full artifact", got, failures)
	}
}

func TestDeltaUploadFallsBackWhenFragmented(t *testing.T) {
	f := newDeltaFixture(t)
	b := randomBytes(3, deltaTestSize)
	f.deploy(t, "v1", f.jar(t, b))
	f.up.take()
	// A byte changed in every other 1 KiB block: more pieces than a
	// rebuild script may have.
	c := append([]byte{}, b...)
	for i := 100; i < len(c); i += 2048 {
		c[i] ^= 0xff
	}
	v2 := f.jar(t, c)
	detail := f.deploy(t, "v2", v2)
	if !strings.HasPrefix(detail, "full: ") || !strings.Contains(detail, "delta too fragmented") {
		t.Errorf("upload: %q, want a full upload of a fragmented delta", detail)
	}
	if got, failures := f.up.take(); got[UploadFull] != v2.Size || got[UploadDelta] != 0 || failures != 0 {
		t.Errorf("sent %v with %d rebuild failures, want only the full artifact", got, failures)
	}
}

func TestDeltaUploadNeedsTheBaseInTheCache(t *testing.T) {
	f := newDeltaFixture(t)
	v1 := f.jar(t, randomBytes(4, deltaTestSize))
	f.deploy(t, "v1", v1)
	delete(f.cached, v1.SHA256)
	detail := f.deploy(t, "v2", f.jar(t, edit(randomBytes(4, deltaTestSize))))
	if !strings.HasPrefix(detail, "full: ") || !strings.Contains(detail, "is not in the gateway's cache") {
		t.Errorf("upload: %q, want a full upload without the base", detail)
	}
}

// A tar artifact with keep_file keeps its file beside the release, so the
// next deployment sends a delta against it.
func TestDeltaUploadOfKeptTar(t *testing.T) {
	f := newDeltaFixture(t)
	big := string(randomBytes(5, 512<<10))
	tarOf := func(version string) release {
		rel := writeTar(t, filepath.Join(t.TempDir(), "app.tar"), false, []tarEntry{
			{hdr: tar.Header{Name: "lib.bin"}, body: big},
			{hdr: tar.Header{Name: "version.txt"}, body: version},
		})
		f.cached[rel.SHA256] = rel.Path
		return rel
	}
	deploy := func(id string, rel release) string {
		job := f.job(id, rel)
		job.Release.Artifact.KeepFile = true
		job.Spec.Hooks = Hooks{}
		job.Spec.Health = Health{Command: "test -f version.txt"}
		job.Base = func(sum string) (string, bool) { p, ok := f.cached[sum]; return p, ok }
		res, evs := f.fixture.deploy(t, job)
		if res.State != succeeded {
			t.Fatalf("deploy %s: %v at %v: %v", id, res.State, res.Step, res.Err)
		}
		for _, ev := range evs.list() {
			if ev.GetStep() == outpostv1.Step_STEP_UPLOAD && ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED {
				return ev.GetDetail()
			}
		}
		t.Fatalf("deploy %s: no upload step succeeded", id)
		return ""
	}
	deploy("v1", tarOf("one"))
	v2 := tarOf("two")
	if detail := deploy("v2", v2); !strings.HasPrefix(detail, "delta: sent ") {
		t.Errorf("second tar deployment's upload: %q, want a delta", detail)
	}
	if b, err := os.ReadFile(filepath.Join(f.path, "current", "version.txt")); err != nil || string(b) != "two" {
		t.Errorf("current/version.txt = %q, %v", b, err)
	}
	kept, err := os.ReadFile(filepath.Join(f.path, "current", artifactFile))
	want, _ := os.ReadFile(v2.Path)
	if err != nil || !bytes.Equal(kept, want) {
		t.Errorf("the kept tar differs from the artifact (%v)", err)
	}
}

// TestDeltaUploadUnrelatedIsSentWhole: an artifact with nothing in common
// with the node's is sent whole, and the gateway's scan for a delta
// stopped once it passed the limit (about half the artifact), not at its
// end, so that the full upload starts soon.
func TestDeltaUploadUnrelatedIsSentWhole(t *testing.T) {
	f := newDeltaFixture(t)
	f.deploy(t, "v1", f.jar(t, randomBytes(5, deltaTestSize)))
	f.up.take()
	v2 := f.jar(t, randomBytes(6, deltaTestSize))
	detail := f.deploy(t, "v2", v2)
	if !strings.HasPrefix(detail, "full: ") || !strings.Contains(detail, "delta too large (over 50% of 1.0 MiB within the first 576.0 KiB)") { // the check after 512 KiB, every 64 KiB
		t.Errorf("upload: %q, want a full upload that stopped the delta at half the artifact", detail)
	}
	if got, failures := f.up.take(); got[UploadFull] != v2.Size || got[UploadDelta] != 0 || failures != 0 {
		t.Errorf("sent %v with %d rebuild failures, want only the full artifact", got, failures)
	}
}
