package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/pki"
)

func TestSharedCA(t *testing.T) {
	st := storetest.Open(t)
	ctx := ctxT(t)
	root := t.TempDir()
	dir := func(name string) string { return filepath.Join(root, name, auth.PKIDir) }

	// Four replicas start at once, each with an empty data directory.
	const replicas = 4
	cas := make([]*pki.CA, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cas[i], errs[i] = auth.LoadOrCreateCA(ctx, st, dir(string(rune('a'+i))))
		}()
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if cas[i].Fingerprint() != cas[0].Fingerprint() {
			t.Errorf("replica %d has another CA", i)
		}
		key := filepath.Join(dir(string(rune('a'+i))), pki.CAKeyFile)
		if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("replica %d key file: %v, %v", i, fi, err)
		}
	}

	// A restart, and a new replica, get the same CA.
	for _, name := range []string{"a", "new"} {
		ca, err := auth.LoadOrCreateCA(ctx, st, dir(name))
		if err != nil || ca.Fingerprint() != cas[0].Fingerprint() {
			t.Errorf("replica %s: other CA or %v", name, err)
		}
	}

	// A replica holding another CA refuses to start, and keeps its files.
	other := t.TempDir()
	if _, err := pki.LoadOrCreateCA(other); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(other, pki.CACertFile))
	_, err := auth.LoadOrCreateCA(ctx, st, other)
	if err == nil || !strings.Contains(err.Error(), "other than the one") {
		t.Errorf("LoadOrCreateCA with a foreign local CA = %v, want a refusal", err)
	}
	if after, _ := os.ReadFile(filepath.Join(other, pki.CACertFile)); string(after) != string(before) {
		t.Error("the foreign local CA was overwritten")
	}
}

func TestSharedCAPublishesAnExistingLocalCA(t *testing.T) {
	// A single control plane that ran before sharing existed: its CA (and
	// every credential it issued) becomes the shared one.
	st := storetest.Open(t)
	ctx := ctxT(t)
	d := t.TempDir()
	local, err := pki.LoadOrCreateCA(d)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := auth.LoadOrCreateCA(ctx, st, d)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Fingerprint() != local.Fingerprint() {
		t.Error("the local CA was not kept")
	}
	second, err := auth.LoadOrCreateCA(ctx, st, t.TempDir())
	if err != nil || second.Fingerprint() != local.Fingerprint() {
		t.Errorf("second replica: other CA or %v", err)
	}
}
