package deployer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/delta"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestRebuildScriptRebuildsWithShellTools runs the rebuild script with the
// local sh and dd on a deploy path with a hostile name: the
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

// TestDDRun runs ddRun's commands with the local dd: each run of blocks
// is copied exactly, and a long run is copied mostly with large reads, in
// at most three commands.
func TestDDRun(t *testing.T) {
	const bs = 3 << 10 // group: 341 blocks
	group := int64(ddChunk / bs)
	base := randomBytes(21, int(10*group*bs+5*bs))
	dir := t.TempDir()
	b := filepath.Join(dir, "base")
	if err := os.WriteFile(b, base, 0o644); err != nil {
		t.Fatal(err)
	}
	blocks := int64(len(base) / bs)
	for _, c := range []struct{ first, count int64 }{
		{0, 1}, {5, 3}, {0, 4*group - 1}, // short runs: one dd
		{0, blocks}, {group, 4 * group}, {1, 4 * group}, {group - 1, 5*group + 2}, {7, blocks - 7},
	} {
		var s script
		ddRun(&s, bs, c.first, c.count)
		cmds := strings.Count(s.String(), "dd if=")
		cmd := exec.Command("sh", "-c", "{ "+s.String()+":; } >\"$O\"")
		cmd.Env = []string{"B=" + b, "O=" + filepath.Join(dir, "out")}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("run %+v: %v\n%s\n%s", c, err, s.String(), out)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "out"))
		if !bytes.Equal(got, base[c.first*bs:(c.first+c.count)*bs]) {
			t.Errorf("run %+v: %d bytes copied, not the run's %d", c, len(got), c.count*bs)
		}
		large := strings.Contains(s.String(), "bs="+strconv.FormatInt(bs*group, 10)+" ")
		switch {
		case c.count < 4*group && (cmds != 1 || large):
			t.Errorf("short run %+v: %d commands:\n%s", c, cmds, s.String())
		case c.count >= 4*group && (cmds > 3 || !large):
			t.Errorf("long run %+v: %d commands, large reads %v:\n%s", c, cmds, large, s.String())
		}
	}
}

// TestDDLiteral runs ddLiteral's commands with the local dd, one literal
// after another on the same file descriptor: each copies exactly its
// bytes and leaves the offset for the next, including literals larger
// than ddChunk (two commands) and of exactly ddChunk (one).
func TestDDLiteral(t *testing.T) {
	lens := []int64{1, 3 << 10, ddChunk, ddChunk + 1, 2*ddChunk + 4321, 7, 3 * ddChunk}
	var total int64
	for _, n := range lens {
		total += n
	}
	lits := randomBytes(23, int(total))
	dir := t.TempDir()
	d := filepath.Join(dir, "literals")
	if err := os.WriteFile(d, lits, 0o600); err != nil {
		t.Fatal(err)
	}
	var s script
	for _, n := range lens {
		before := strings.Count(s.String(), "dd ")
		ddLiteral(&s, n)
		if cmds := strings.Count(s.String(), "dd ") - before; cmds != 1 && (n <= ddChunk || n%ddChunk == 0 || cmds != 2) {
			t.Errorf("literal of %d bytes: %d commands", n, cmds)
		}
	}
	cmd := exec.Command("sh", "-c", "{ "+s.String()+":; } 3<\"$D\" >\"$O\"")
	cmd.Env = []string{"D=" + d, "O=" + filepath.Join(dir, "out")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s\n%s", err, s.String(), out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "out"))
	if !bytes.Equal(got, lits) {
		t.Errorf("%d bytes copied, want the %d literal bytes in order", len(got), len(lits))
	}
}
