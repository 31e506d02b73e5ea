package sshexec

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKnownHostsCacheReusesAndReloads checks that unchanged files are not
// parsed again, and that an edited file is seen by the next lookup.
func TestKnownHostsCacheReusesAndReloads(t *testing.T) {
	const addr = "10.0.0.1:22" // only a name to look up; nothing is dialled
	file := filepath.Join(t.TempDir(), "known_hosts")
	first, second := newHostKey(t), newHostKey(t)
	if err := os.WriteFile(file, []byte(knownhosts.Line([]string{addr}, first)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	db1, err := loadKnownHosts([]string{file})
	if err != nil {
		t.Fatal(err)
	}
	db2, err := loadKnownHosts([]string{file})
	if err != nil {
		t.Fatal(err)
	}
	if db1 != db2 {
		t.Errorf("unchanged known_hosts was parsed again")
	}

	// Replace the file (a new inode, as editors and config management do).
	tmp := file + ".new"
	if err := os.WriteFile(tmp, []byte(knownhosts.Line([]string{addr}, second)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	db3, err := loadKnownHosts([]string{file})
	if err != nil {
		t.Fatal(err)
	}
	if db3 == db1 {
		t.Fatalf("edited known_hosts was not reloaded")
	}
	keys, err := knownKeys(db3, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || string(keys[0].key.Marshal()) != string(second.Marshal()) {
		t.Errorf("after the edit, known keys = %v, want only the new key", keys)
	}

	if _, err := loadKnownHosts([]string{filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Errorf("a missing known_hosts file loaded without error")
	}
}

// BenchmarkHostKeyVerifier measures what a dial pays for host key set-up
// with a 1,000-host known_hosts file.
func BenchmarkHostKeyVerifier(b *testing.B) {
	file := filepath.Join(b.TempDir(), "known_hosts")
	var data []byte
	for i := range 1000 {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := ssh.NewPublicKey(pub)
		data = append(data, knownhosts.Line([]string{"10.1." + itoa(i/250) + "." + itoa(i%250) + ":22"}, k)+"\n"...)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("cache=on", func(b *testing.B) {
		for b.Loop() {
			if _, err := newHostKeyVerifier("10.1.2.3:22", HostKeys{KnownHostsFiles: []string{file}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What every dial paid before the cache: parse the files again.
	b.Run("cache=off", func(b *testing.B) {
		for b.Loop() {
			if _, err := knownhosts.New(file); err != nil {
				b.Fatal(err)
			}
			if _, err := certAuthorityLines(file); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
