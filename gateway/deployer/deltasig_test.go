package deployer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestDeltaCacheKeepsSignatures: a base's signature is computed once
// however many callers ask at once (warm included), and a failed
// computation (the file is gone) is not kept, so a later call retries.
func TestDeltaCacheKeepsSignatures(t *testing.T) {
	p := filepath.Join(t.TempDir(), "base.jar")
	var c deltaCache
	defer c.stop()
	if _, err := c.signature(p, "d1"); err == nil {
		t.Fatal("signature of a missing file: no error")
	}
	if err := os.WriteFile(p, randomBytes(5, 200<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	c.warm(p, "d1")
	var wg sync.WaitGroup
	sigs := make([]any, 8)
	for i := range sigs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.signature(p, "d1")
			if err != nil {
				t.Error(err)
			}
			sigs[i] = s
		}()
	}
	wg.Wait()
	for i, s := range sigs {
		if s != sigs[0] || s == nil {
			t.Fatalf("caller %d got another signature: computed more than once", i)
		}
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if s, err := c.signature(p, "d1"); err != nil || s != sigs[0] {
		t.Errorf("kept signature not reused after the file went: %v", err)
	}
	for i := range deltaCacheSize + 1 {
		c.warm(p, string(rune('a'+i)))
	}
	if n := c.sigCount(); n > deltaCacheSize {
		t.Errorf("%d signatures kept, want at most %d", n, deltaCacheSize)
	}
}

// TestDeltaCacheStop: stop ends the background computations and waits
// for them; a cancelled one is forgotten, warm starts none after stop,
// and a signature asked for is still computed.
func TestDeltaCacheStop(t *testing.T) {
	p := filepath.Join(t.TempDir(), "base.jar")
	if err := os.WriteFile(p, randomBytes(6, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := readSignature(ctx, p); !errors.Is(err, context.Canceled) {
		t.Errorf("readSignature(cancelled ctx) = %v, want context.Canceled", err)
	}
	var c deltaCache
	c.warm(p, "d1")
	c.stop() // returns once the computation ended, cancelled or done
	c.warm(p, "d2")
	if n := c.sigCount(); n > 1 {
		t.Errorf("%d signatures after stop and a second warm, want at most the first", n)
	}
	if s, err := c.signature(p, "d2"); err != nil || s == nil {
		t.Errorf("signature after stop = %v, %v; want it computed", s, err)
	}
}

func (c *deltaCache) sigCount() int {
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	return len(c.sigs)
}

// TestPlanDeltaSendsHugeArtifactsWhole: an artifact over MaxDeltaSize is
// sent whole without being read (the gateway would hold it in memory to
// compute a delta), and its signature is not computed ahead either.
func TestPlanDeltaSendsHugeArtifactsWhole(t *testing.T) {
	d, err := New(Config{Dial: func(context.Context, *outpostv1.Node) (Remote, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sum := strings.Repeat("a", 64)
	dep := &deployment{d: d, job: Job{
		Release:      &outpostv1.Release{Id: "r2", Artifact: &outpostv1.Artifact{Sha256: strings.Repeat("b", 64), Size: MaxDeltaSize + 1}},
		ArtifactPath: filepath.Join(t.TempDir(), "missing.jar"),
		Base:         func(string) (string, bool) { return filepath.Join(t.TempDir(), "base.jar"), true },
	}}
	dep.facts.baseDigest, dep.facts.current = sum, "releases/r1"
	got, why := dep.planDelta()
	if got != nil || why != "artifact larger than 2.0 GiB" {
		t.Errorf("planDelta = %v, %q; want no delta, the size named", got, why)
	}
	if n := d.deltas.sigCount(); n != 0 {
		t.Errorf("%d signatures started for an artifact sent whole", n)
	}
}
