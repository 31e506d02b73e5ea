package keyfile_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/outposthq/outpost/internal/keyfile"
)

func TestReadPrivate(t *testing.T) {
	dir := t.TempDir()
	const max = 64
	secret := []byte("zq-secret-content\n")
	write := func(name string, data []byte, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode passes the umask
			t.Fatal(err)
		}
		return p
	}
	link := func(name, target string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	private := write("private", secret, 0o600)
	open := write("open", secret, 0o644)
	tests := []struct {
		name string
		path string
		want string // "" means secret is read
	}{
		{"0600", private, ""},
		{"0400", write("readonly", secret, 0o400), ""},
		{"exactly max bytes", write("max", bytes.Repeat([]byte("k"), max), 0o600), ""},
		{"symlink to a private file", link("link-private", private), ""},
		{"0640", write("g-r", secret, 0o640), "has mode 0640: group and others must have no access; run chmod 600"},
		{"0604", write("o-r", secret, 0o604), "has mode 0604"},
		{"0602", write("o-w", secret, 0o602), "has mode 0602"},
		{"0660", write("g-rw", secret, 0o660), "has mode 0660"},
		{"0644", open, "has mode 0644"},
		{"symlink to an open file", link("link-open", open), "has mode 0644"},
		{"FIFO", fifo, "is not a regular file but a FIFO"},
		{"directory", dir, "is not a regular file but a directory"},
		{"over max bytes", write("big", bytes.Repeat([]byte("k"), max+1), 0o600), "larger than expected (over 64 bytes)"},
		{"missing", filepath.Join(dir, "missing"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keyfile.ReadPrivate(tt.path, max)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("ReadPrivate(%s) = %v", tt.path, err)
			case tt.want == "" && !bytes.Equal(got, secret) && !strings.HasPrefix(tt.name, "exactly"):
				t.Errorf("ReadPrivate(%s) = %q, want %q", tt.path, got, secret)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ReadPrivate(%s) = %v, want an error containing %q", tt.path, err, tt.want)
			case err != nil && strings.Contains(err.Error(), "zq-secret"):
				t.Errorf("error quotes the file's content: %v", err)
			}
		})
	}
	if _, err := keyfile.ReadPrivate(filepath.Join(dir, "missing"), max); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := keyfile.ReadPrivate(filepath.Join(dir, "big"), max); !errors.Is(err, keyfile.ErrTooLarge) {
		t.Errorf("large file: %v, want ErrTooLarge", err)
	}
}

func TestReadPrivateRefusesAnotherOwner(t *testing.T) {
	// Another user could replace the file's content at will (and chose
	// the key). Only root can make a file that someone else owns.
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file away")
	}
	p := filepath.Join(t.TempDir(), "theirs")
	if err := os.WriteFile(p, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := keyfile.ReadPrivate(p, 64); err == nil || !strings.Contains(err.Error(), "is owned by uid 4242, not by this process's user (uid 0) or root") {
		t.Errorf("ReadPrivate(file of uid 4242) = %v, want an owner refusal", err)
	}
}
