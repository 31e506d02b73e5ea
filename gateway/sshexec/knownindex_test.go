package sshexec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// TestKnownIndexAnswersLikeKnownhosts checks that, for every query, the
// index gives knownhosts' own answer, and that it is used only for files
// of plain lines.
func TestKnownIndexAnswersLikeKnownhosts(t *testing.T) {
	a, b, c, other := newHostKey(t), newHostKey(t), newHostKey(t), newHostKey(t)
	line := func(hosts string, k ssh.PublicKey) string {
		return hosts + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	}
	cert := hostCert(t, a)
	tests := []struct {
		name    string
		files   []string // contents
		indexed bool
	}{
		{"plain lines, ports, several hosts per line, comments, blank lines, two files", []string{
			"# fleet\n" + line("[10.0.0.1]:2222", a) + "\n\n" + line("10.0.0.2,[10.0.0.3]:2222,10.0.0.2", b) + "\n" +
				line("[10.0.0.1]:2222", c) + "\n\t " + line("host.example", a) + "   trailing comment\n",
			line("[10.0.0.4]:22", b) + "\n" + line("10.0.0.1:2222", other) + "\n",
		}, true},
		{"a @cert-authority line", []string{line("[10.0.0.1]:2222", a) + "\n@cert-authority *.example " + line("", c)[1:] + "\n"}, false},
		{"a @revoked line", []string{line("[10.0.0.1]:2222", a) + "\n@revoked * " + line("", b)[1:] + "\n"}, false},
		{"a wildcard", []string{line("[10.0.0.1]:2222", a) + "\n" + line("10.0.0.*", b) + "\n"}, false},
		{"a negation", []string{line("10.0.0.1,!10.0.0.2", a) + "\n"}, false},
		{"a hashed name", []string{line(knownhosts.HashHostname("10.0.0.1"), a) + "\n"}, false},
	}
	addrs := []string{"10.0.0.1:2222", "10.0.0.2:22", "10.0.0.3:2222", "10.0.0.4:22", "[10.0.0.4]:22",
		"host.example:22", "10.0.0.9:22", "10.0.0.2:2222", "no-port", ""}
	keys := []ssh.PublicKey{a, b, c, other, cert}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var files []string
			for j, content := range tt.files {
				f := filepath.Join(dir, fmt.Sprintf("known_hosts_%d_%d", i, j))
				if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			db, err := loadKnownHosts(files)
			if err != nil {
				t.Fatal(err)
			}
			if got := db.index != nil; got != tt.indexed {
				t.Fatalf("indexed = %v, want %v", got, tt.indexed)
			}
			for _, addr := range addrs {
				for ki, k := range keys {
					got, want := db.check(addr, remote, k), db.cb(addr, remote, k)
					if d := describeKnownErr(got); d != describeKnownErr(want) {
						t.Errorf("check(%q, key %d) = %s, knownhosts says %s", addr, ki, d, describeKnownErr(want))
					}
				}
			}
		})
	}
}

// describeKnownErr renders a host key callback's answer for comparison.
func describeKnownErr(err error) string {
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return fmt.Sprintf("%v", err)
	}
	var b strings.Builder
	b.WriteString("KeyError{")
	for _, w := range ke.Want {
		fmt.Fprintf(&b, "%s:%d:%x ", filepath.Base(w.Filename), w.Line, w.Key.Marshal()[len(w.Key.Marshal())-4:])
	}
	b.WriteString("}")
	return b.String()
}

func hostCert(t *testing.T, key ssh.PublicKey) *ssh.Certificate {
	t.Helper()
	_, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caSigner, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &ssh.Certificate{Key: key, CertType: ssh.HostCert, ValidPrincipals: []string{"10.0.0.1"}, ValidBefore: ssh.CertTimeInfinity}
	if err := c.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	return c
}

func randomHostKey(tb testing.TB) ssh.PublicKey {
	tb.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// BenchmarkKnownHostsCheck looks a host up in a 10,000-line known_hosts,
// as a gateway of a 10,000-node fleet does twice per dial.
func BenchmarkKnownHostsCheck(b *testing.B) {
	var buf bytes.Buffer
	var keys []ssh.PublicKey
	for i := range 10_000 {
		k := randomHostKey(b)
		keys = append(keys, k)
		buf.WriteString(knownhosts.Line([]string{fmt.Sprintf("127.1.%d.%d:2222", i/250, i%250+1)}, k) + "\n")
	}
	f := filepath.Join(b.TempDir(), "known_hosts")
	if err := os.WriteFile(f, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	db, err := loadKnownHosts([]string{f})
	if err != nil {
		b.Fatal(err)
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 1, 39, 250), Port: 2222}
	for _, tc := range []struct {
		name  string
		check ssh.HostKeyCallback
	}{{"index", db.check}, {"knownhosts", db.cb}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if err := tc.check("127.1.39.250:2222", remote, keys[9999]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestKnownHostsParsedOnceByConcurrentDials checks that the dials of a
// batch starting together share one parse of the files.
func TestKnownHostsParsedOnceByConcurrentDials(t *testing.T) {
	var buf bytes.Buffer
	for i := range 2000 {
		buf.WriteString(knownhosts.Line([]string{fmt.Sprintf("127.2.%d.%d:2222", i/250, i%250+1)}, randomHostKey(t)) + "\n")
	}
	f := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(f, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	const dials = 32
	dbs := make(chan *knownHostsDB, dials)
	var wg sync.WaitGroup
	for range dials {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := loadKnownHosts([]string{f})
			if err != nil {
				t.Error(err)
			}
			dbs <- db
		}()
	}
	wg.Wait()
	close(dbs)
	first := <-dbs
	for db := range dbs {
		if db != first {
			t.Fatal("concurrent dials parsed the known_hosts files more than once")
		}
	}
}

// fuzzKeys are fixed host keys for FuzzKnownIndex, so that a corpus entry
// means the same on every run: {a}, {b} and {c} in the fuzzed text stand
// for the first three, written as known_hosts writes them; the fourth is
// in no file.
func fuzzKeys(tb testing.TB) []ssh.PublicKey {
	tb.Helper()
	var keys []ssh.PublicKey
	for i := range 4 {
		priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, ed25519.SeedSize))
		k, err := ssh.NewPublicKey(priv.Public())
		if err != nil {
			tb.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

// FuzzKnownIndex checks the known_hosts index against knownhosts itself:
// for any file knownhosts accepts, the index is either not built (a line
// it does not handle) or answers every question as knownhosts does, for
// the fuzzed address and the address of every host pattern in the file,
// and for the fixed keys, every key the file lists for that address and a
// certificate. The file is the fuzzed text with {a}, {b} and {c} replaced
// by key text, so that mutations work on host patterns and layout.
func FuzzKnownIndex(f *testing.F) {
	keys := fuzzKeys(f)
	keyText := func(k ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) }
	expand := strings.NewReplacer("{a}", keyText(keys[0]), "{b}", keyText(keys[1]), "{c}", keyText(keys[2]))
	for _, s := range []struct{ content, address string }{
		{"[10.0.0.1]:2222 {a}\n", "10.0.0.1:2222"},
		{"# fleet\n[10.0.0.1]:2222 {a}\n\n10.0.0.2,[10.0.0.3]:2222,10.0.0.2 {b}\n[10.0.0.1]:2222 {c}\n\t host.example {a}   comment\n", "10.0.0.2:22"},
		{"10.0.0.1:2222 {a}\n[10.0.0.1]:22 {b}\n", "[10.0.0.1]:22"},
		{"[::1]:2222,::1 {a}\n", "[::1]:2222"},
		{"host: {a}\nhost {b}\n", "host:"},
		{"a:b:c {a}\n", "[a:b:c]:22"},
		{"@cert-authority *.example {a}\n10.0.0.1 {b}\n", "10.0.0.1:22"},
		{"10.0.0.* {a}\n", "10.0.0.7:22"},
		{"10.0.0.1,!10.0.0.2 {a}\n", "10.0.0.1:22"},
		{"|1|c2FsdA==|aGFzaA== {a}\n10.0.0.1 {b}\n", "10.0.0.1:22"},
		{"HOST.example {a}\n", "host.example:22"},
		{"10.0.0.1 {a}\r\n10.0.0.2 {b}\r\n", "10.0.0.2:22"},
	} {
		f.Add(s.content, s.address)
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
	f.Fuzz(func(t *testing.T, content, address string) {
		file := filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(file, []byte(expand.Replace(content)), 0o600); err != nil {
			t.Fatal(err)
		}
		cb, err := knownhosts.New(file)
		if err != nil {
			return // the gateway refuses such a file before indexing it
		}
		idx, err := buildKnownIndex([]string{file})
		if err != nil {
			t.Fatalf("buildKnownIndex of a file knownhosts read: %v", err)
		}
		if idx == nil {
			return
		}
		addrs := []string{address}
		for _, line := range strings.Split(expand.Replace(content), "\n") {
			patterns, _ := nextWord(bytes.Trim([]byte(line), " \t\r"))
			for _, p := range strings.Split(patterns, ",") {
				if p == "" {
					continue
				}
				if hp, ok := patternAddr(p); ok {
					addrs = append(addrs, net.JoinHostPort(hp.host, hp.port))
				}
			}
		}
		probe := keys[3]
		for _, addr := range addrs {
			asked := append([]ssh.PublicKey(nil), keys...)
			var ke *knownhosts.KeyError
			if errors.As(cb(addr, remote, probe), &ke) {
				for _, w := range ke.Want {
					asked = append(asked, w.Key)
				}
			}
			for _, k := range asked {
				got, want := idx.check(cb, addr, remote, k), cb(addr, remote, k)
				if g, w := describeKnownAnswer(got), describeKnownAnswer(want); g != w {
					t.Errorf("known_hosts:\n%s\ncheck(%q, %s):\n index: %s\n knownhosts: %s", expand.Replace(content), addr, ssh.FingerprintSHA256(k), g, w)
				}
			}
		}
	})
}

// describeKnownAnswer renders a host key callback's answer in full.
func describeKnownAnswer(err error) string {
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return fmt.Sprintf("%v", err)
	}
	var b strings.Builder
	b.WriteString("KeyError{")
	for _, w := range ke.Want {
		fmt.Fprintf(&b, "%s:%d:%s ", filepath.Base(w.Filename), w.Line, ssh.FingerprintSHA256(w.Key))
	}
	b.WriteString("}")
	return b.String()
}
