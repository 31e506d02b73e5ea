package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestLoadKEK(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, kekSize))
	for _, tc := range []struct {
		name    string
		content string
		ok      bool
	}{
		{"base64 line", good + "\n", true},
		{"no line end", good, true},
		{"CRLF and spaces", "  " + good + "\r\n", true},
		{"empty", "", false},
		{"16 bytes", base64.StdEncoding.EncodeToString(make([]byte, 16)), false},
		{"64 bytes", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64)), false},
		{"all zero", base64.StdEncoding.EncodeToString(make([]byte, kekSize)), false},
		{"raw bytes", string(bytes.Repeat([]byte{7}, kekSize)), false},
		{"not base64", strings.Repeat("!", 44), false},
		{"two keys", good + "\n" + good + "\n", false},
		{"huge", good + strings.Repeat(" ", 4<<20), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ca.kek")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadKEK(path)
			if (err == nil) != tc.ok {
				t.Fatalf("loadKEK = %v, want ok %v", err, tc.ok)
			}
			if err != nil && (!strings.Contains(err.Error(), path) || strings.Contains(err.Error(), good)) {
				t.Errorf("loadKEK = %v, want an error naming the file and not quoting it", err)
			}
		})
	}

	// A symbolic link (a mounted secret) to a private file is fine.
	target := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(target, []byte(good), 0o400); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "ca.kek")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKEK(link); err != nil {
		t.Errorf("loadKEK(symlink to a 0400 file) = %v", err)
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKEK(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("loadKEK(FIFO) = %v, want a refusal (and no hang)", err)
	}
	if _, err := loadKEK(filepath.Join(t.TempDir(), "none")); !errors.Is(err, errNoKEK) {
		t.Errorf("loadKEK(missing) = %v, want errNoKEK", err)
	}
}

func TestLoadOrCreateKEKConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ca.kek")
	const n = 8
	keks := make([]*kek, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keks[i], errs[i] = loadOrCreateKEK(path)
		}()
	}
	wg.Wait()
	cert := []byte("certificate")
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
	}
	// Every caller has the same key: what one seals, all open.
	sealed, err := keks[0].seal(cert, []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	blk := decodeOne(t, sealed)
	for i := range n {
		if got, err := keks[i].open(cert, blk); err != nil || string(got) != "key" {
			t.Errorf("caller %d opens %q, %v", i, got, err)
		}
	}
	if _, err := keks[0].open([]byte("another certificate"), blk); err == nil {
		t.Error("a sealed key opened for another certificate")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("KEK file: %v, %v; want mode 0600", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("KEK directory: %v, %v; want mode 0700", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".kek-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func decodeOne(t *testing.T, data []byte) *pem.Block {
	t.Helper()
	blk, rest := pem.Decode(data)
	if blk == nil || len(rest) > 0 {
		t.Fatalf("not one PEM block: %q", data)
	}
	return blk
}
