package auth_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/pki"
)

func TestSharedCA(t *testing.T) {
	st := storetest.Open(t)
	ctx := ctxT(t)
	root := t.TempDir()
	dir := func(name string) string { return filepath.Join(root, name, auth.PKIDir) }
	// One KEK file for every replica, made by whichever starts first.
	kekFile := filepath.Join(root, "ca.kek")

	// Four replicas start at once, each with an empty data directory.
	const replicas = 4
	cas := make([]*pki.CA, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cas[i], errs[i] = auth.LoadOrCreateCA(ctx, st, dir(string(rune('a'+i))), kekFile)
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
		ca, err := auth.LoadOrCreateCA(ctx, st, dir(name), kekFile)
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
	_, err := auth.LoadOrCreateCA(ctx, st, other, kekFile)
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
	kekFile := filepath.Join(t.TempDir(), "ca.kek")
	local, err := pki.LoadOrCreateCA(d)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := auth.LoadOrCreateCA(ctx, st, d, kekFile)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Fingerprint() != local.Fingerprint() {
		t.Error("the local CA was not kept")
	}
	second, err := auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile)
	if err != nil || second.Fingerprint() != local.Fingerprint() {
		t.Errorf("second replica: other CA or %v", err)
	}
}

// rawCA returns the value at store.CAKey as etcd holds it, and the PEM
// bundle inside.
func rawCA(t *testing.T, st *store.Store) (raw, bundle []byte) {
	t.Helper()
	resp, err := st.Client().Get(ctxT(t), store.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s holds %d values, want 1", store.CAKey, len(resp.Kvs))
	}
	raw = resp.Kvs[0].Value
	v := new(wrapperspb.BytesValue)
	if err := proto.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
	return raw, v.GetValue()
}

// checkSealed fails unless etcd's copy of the CA cannot sign: no private
// key in it that anyone could parse.
func checkSealed(t *testing.T, st *store.Store) {
	t.Helper()
	raw, bundle := rawCA(t, st)
	if bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Error("etcd holds the CA key in the clear")
	}
	if _, err := pki.ParseCA(bundle, bundle); err == nil {
		t.Error("the CA in etcd parses with its key")
	}
	if !bytes.Contains(bundle, []byte("BEGIN CERTIFICATE")) {
		t.Error("etcd's copy of the CA lost its certificate")
	}
}

// writeKEK writes a fresh random KEK file with mode perm and returns its path.
func writeKEK(t *testing.T, perm os.FileMode) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.kek")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func TestSharedCAKeyIsSealedInEtcd(t *testing.T) {
	st := storetest.Open(t)
	ctx := ctxT(t)
	kekFile := filepath.Join(t.TempDir(), "kek", "ca.kek")

	ca, err := auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile)
	if err != nil {
		t.Fatal(err)
	}
	checkSealed(t, st)
	if fi, err := os.Stat(kekFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("KEK file: %v, %v; want mode 0600", fi, err)
	}
	sealed, _ := rawCA(t, st)

	// A second replica with the same KEK file opens it.
	second, err := auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile)
	if err != nil || second.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("replica with the KEK: other CA or %v", err)
	}

	// Replicas without it are refused, and nothing changes: no new CA,
	// no new KEK, no local copy.
	for _, tc := range []struct {
		name    string
		kekFile string
		want    string
	}{
		{"no KEK file", filepath.Join(t.TempDir(), "ca.kek"), "does not exist"},
		{"another KEK", writeKEK(t, 0o600), "does not open the CA key"},
		{"KEK readable by others", writeKEK(t, 0o644), "chmod 600"},
		{"KEK readable by the group", writeKEK(t, 0o640), "chmod 600"},
		{"KEK is a directory", t.TempDir(), "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(tc.kekFile)
			dir := filepath.Join(t.TempDir(), "pki")
			_, err := auth.LoadOrCreateCA(ctx, st, dir, tc.kekFile)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadOrCreateCA = %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.kekFile) {
				t.Errorf("the error does not name the KEK file %s: %v", tc.kekFile, err)
			}
			if after, _ := os.ReadFile(tc.kekFile); !bytes.Equal(after, before) {
				t.Error("the KEK file changed")
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("a refused replica wrote %s", dir)
			}
			if now, _ := rawCA(t, st); !bytes.Equal(now, sealed) {
				t.Error("the CA in etcd changed")
			}
		})
	}
}

func TestSharedCARefusesAlteredValue(t *testing.T) {
	st := storetest.Open(t)
	ctx := ctxT(t)
	kekFile := filepath.Join(t.TempDir(), "ca.kek")
	if _, err := auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile); err != nil {
		t.Fatal(err)
	}
	_, bundle := rawCA(t, st)
	other, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certEnd := bytes.Index(bundle, []byte("-----END CERTIFICATE-----\n")) + len("-----END CERTIFICATE-----\n")
	cert, sealedKey := bundle[:certEnd], bundle[certEnd:]
	flipped := bytes.Clone(bundle)
	flipped[len(flipped)-40] ^= 'A' ^ 'B' // a base64 character of the sealed key
	for _, tc := range []struct {
		name  string
		value []byte
		want  string
	}{
		{"sealed key changed", flipped, ""},
		// The sealed key opens only with its own certificate.
		{"certificate swapped", append(other.CertPEM(), sealedKey...), "does not open"},
		{"sealed key missing", cert, "want one certificate and one key"},
		{"two keys", append(bytes.Clone(bundle), sealedKey...), "want one certificate and one key"},
		{"other block", append(bytes.Clone(bundle), "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"...), `"EC PARAMETERS"`},
		{"unknown algorithm", bytes.Replace(bundle, []byte("AES-256-GCM"), []byte("ROT13"), 1), "ROT13"},
		{"empty", nil, "want one certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(wrapperspb.Bytes(tc.value))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Client().Put(ctx, store.CAKey, string(b)); err != nil {
				t.Fatal(err)
			}
			_, err = auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadOrCreateCA = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSharedCASealsAKeyStoredInTheClear(t *testing.T) {
	// An older version stored the CA key in etcd in the clear.
	st := storetest.Open(t)
	ctx := ctxT(t)
	old, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := old.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(wrapperspb.Bytes(append(old.CertPEM(), key...)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client().Put(ctx, store.CAKey, string(b)); err != nil {
		t.Fatal(err)
	}

	// Three replicas upgrade at once; they share a KEK file, which none
	// has yet.
	kekFile := filepath.Join(t.TempDir(), "ca.kek")
	const replicas = 3
	cas := make([]*pki.CA, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cas[i], errs[i] = auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile)
		}()
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if cas[i].Fingerprint() != old.Fingerprint() {
			t.Errorf("replica %d has another CA than the one in etcd", i)
		}
	}
	checkSealed(t, st)
	if fi, err := os.Stat(kekFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("KEK file: %v, %v; want mode 0600", fi, err)
	}
	// The sealed key opens again, and gives the same CA.
	again, err := auth.LoadOrCreateCA(ctx, st, t.TempDir(), kekFile)
	if err != nil || again.Fingerprint() != old.Fingerprint() {
		t.Errorf("after sealing: other CA or %v", err)
	}
}
