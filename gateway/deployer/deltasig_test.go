package deployer

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestDeltaCacheKeepsSignatures: a base's signature is computed once
// however many callers ask at once (warm included), and a failed
// computation (the file is gone) is not kept, so a later call retries.
func TestDeltaCacheKeepsSignatures(t *testing.T) {
	p := filepath.Join(t.TempDir(), "base.jar")
	var c deltaCache
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

func (c *deltaCache) sigCount() int {
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	return len(c.sigs)
}
