package deployer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/delta"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestRebuildScriptRebuildsWithShellTools runs the rebuild script with the
// local sh, dd, tail and head on a deploy path with a hostile name: the
// result is the target byte for byte, the uploaded bytes are gone, and a
// wrong base is caught by the SHA-256 check and its output removed.
func TestRebuildScriptRebuildsWithShellTools(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "it's a $(dir) `x`")
	base := randomBytes(9, 300<<10)
	target := edit(base)
	sum := sha256.Sum256(target)
	sig, err := delta.NewSignature(bytes.NewReader(base), int64(len(base)), delta.BlockSize(int64(len(base))))
	if err != nil {
		t.Fatal(err)
	}
	d := delta.Compute(sig, target)
	if len(d.Pieces) < 4 {
		t.Fatalf("only %d pieces: the test wants copies and literals", len(d.Pieces))
	}
	dep := &deployment{dir: dir, facts: nodeFacts{current: "releases/v1"}, job: Job{Release: &outpostv1.Release{
		Id: "v2", Artifact: &outpostv1.Artifact{Name: "app.jar", Unpack: outpostv1.Unpack_UNPACK_NONE, Sha256: hex.EncodeToString(sum[:])},
	}}}
	partial := filepath.Join(dir, "releases", "v2.partial")
	run := func(base []byte) (string, int) {
		t.Helper()
		for _, p := range []string{filepath.Join(dir, "releases", "v1"), partial} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "releases", "v1", "app.jar"), base, 0o755); err != nil {
			t.Fatal(err)
		}
		var payload bytes.Buffer
		payload.ReadFrom(d.Payload(bytes.NewReader(target)))
		if err := os.WriteFile(filepath.Join(partial, deltaFile), payload.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", dep.rebuildScript(d))
		out, _ := cmd.Output()
		if _, err := os.Stat(filepath.Join(partial, deltaFile)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", deltaFile, err)
		}
		return strings.TrimSpace(string(out)), cmd.ProcessState.ExitCode()
	}
	if out, code := run(base); code != 0 {
		t.Fatalf("rebuild exited %d: %s", code, out)
	}
	got, err := os.ReadFile(filepath.Join(partial, "app.jar"))
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("rebuilt file differs from the target (%v)", err)
	}
	damaged := append([]byte{}, base...)
	copy(damaged[100<<10:], "damaged on the node")
	if out, code := run(damaged); code != exitMismatch || len(out) != 64 {
		t.Fatalf("rebuild from a damaged base exited %d (%q), want %d and the wrong digest", code, out, exitMismatch)
	}
	if _, err := os.Stat(filepath.Join(partial, "app.jar")); !os.IsNotExist(err) {
		t.Errorf("a rebuilt file that did not verify was kept: %v", err)
	}
}
