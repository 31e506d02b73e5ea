package sshexec

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyError reports a host key that was not accepted. The connection is
// closed before authentication, so no command ran.
type HostKeyError struct {
	// Address is the node's host:port.
	Address string
	// Presented is the key the node showed: type and SHA256 fingerprint
	// (for a certificate, of the certified key, plus its signing CA).
	Presented string
	// Expected lists the keys known for Address, the same way; CA keys are
	// prefixed "@cert-authority". Empty means the host is unknown.
	Expected []string
	// Reason is why the key was refused when that says more than a
	// mismatch: revoked, expired certificate, wrong principal. May be nil.
	Reason error
}

func (e *HostKeyError) Error() string {
	var b strings.Builder
	if len(e.Expected) == 0 {
		fmt.Fprintf(&b, "sshexec: unknown host %s: presented %s; no pinned or known_hosts key for it (never trusted on first use)", e.Address, e.Presented)
	} else {
		fmt.Fprintf(&b, "sshexec: host key for %s not accepted: presented %s, expected %s", e.Address, e.Presented, strings.Join(e.Expected, " or "))
	}
	if e.Reason != nil {
		fmt.Fprintf(&b, ": %v", e.Reason)
	}
	return b.String()
}

func (e *HostKeyError) Unwrap() error { return e.Reason }

// fingerprint formats key as "<type> SHA256:<hash>", and a certificate as
// its type, the certified key's fingerprint and the signing CA's.
func fingerprint(key ssh.PublicKey) string {
	if cert, ok := key.(*ssh.Certificate); ok {
		return fmt.Sprintf("%s %s (signed by CA %s %s)", cert.Type(), ssh.FingerprintSHA256(cert.Key),
			cert.SignatureKey.Type(), ssh.FingerprintSHA256(cert.SignatureKey))
	}
	return key.Type() + " " + ssh.FingerprintSHA256(key)
}

// hostKeyVerifier checks the key a node presents, for one Address.
type hostKeyVerifier struct {
	address    string
	pinned     []ssh.PublicKey
	knownHosts ssh.HostKeyCallback // nil without known_hosts files
	expected   []string            // fingerprints known for address
	algorithms []string            // host key algorithms to offer; nil = library defaults
}

// newHostKeyVerifier loads the known_hosts files and works out which keys
// are known for address, so the handshake asks only for those algorithms.
func newHostKeyVerifier(address string, hk HostKeys) (*hostKeyVerifier, error) {
	v := &hostKeyVerifier{address: address, pinned: hk.Pinned}
	var plain []ssh.PublicKey
	var hasCA bool
	for _, k := range hk.Pinned {
		v.expected = append(v.expected, fingerprint(k))
		plain = append(plain, k)
	}
	if len(hk.KnownHostsFiles) > 0 {
		db, err := loadKnownHosts(hk.KnownHostsFiles)
		if err != nil {
			return nil, err
		}
		v.knownHosts = db.check
		known, err := knownKeys(db, address)
		if err != nil {
			return nil, err
		}
		for _, k := range known {
			if k.ca {
				hasCA = true
				v.expected = append(v.expected, "@cert-authority "+fingerprint(k.key))
				continue
			}
			v.expected = append(v.expected, fingerprint(k.key))
			plain = append(plain, k.key)
		}
	}
	v.algorithms = hostKeyAlgorithms(hasCA, plain)
	return v, nil
}

// check is the ssh.HostKeyCallback. known_hosts runs first so that a
// @revoked key is refused even when it is also pinned.
func (v *hostKeyVerifier) check(_ string, remote net.Addr, key ssh.PublicKey) error {
	var reason error
	if v.knownHosts != nil {
		err := v.knownHosts(v.address, remote, key)
		if err == nil {
			return nil
		}
		var revoked *knownhosts.RevokedError
		if errors.As(err, &revoked) {
			return v.refuse(key, errors.New("key is @revoked in known_hosts"))
		}
		var keyErr *knownhosts.KeyError
		if !errors.As(err, &keyErr) {
			// Certificate problems (expired, wrong principal, unknown CA)
			// say more than "mismatch".
			reason = err
		}
	}
	for _, p := range v.pinned {
		if bytes.Equal(p.Marshal(), key.Marshal()) {
			return nil
		}
	}
	return v.refuse(key, reason)
}

func (v *hostKeyVerifier) refuse(key ssh.PublicKey, reason error) error {
	return &HostKeyError{
		Address:   v.address,
		Presented: fingerprint(key),
		Expected:  slices.Clone(v.expected),
		Reason:    reason,
	}
}

type knownKey struct {
	key ssh.PublicKey
	ca  bool // from an @cert-authority line
}

// knownKeys lists the known_hosts keys that apply to address. x/crypto's
// knownhosts does not export its database, so it is asked with a key no
// host can have: the resulting KeyError lists every line that matches
// address, with knownhosts' own host matching (patterns, negation, hashed
// names, ports). Those lines are then looked up to tell @cert-authority
// lines from plain ones.
func knownKeys(db *knownHostsDB, address string) ([]knownKey, error) {
	probe, err := probeKey()
	if err != nil {
		return nil, err
	}
	err = db.check(address, &net.TCPAddr{IP: net.IPv4zero}, probe)
	var keyErr *knownhosts.KeyError
	if !errors.As(err, &keyErr) {
		// Only a KeyError can come back for a random plain key.
		return nil, fmt.Errorf("sshexec: known_hosts lookup for %s: %v", address, err)
	}
	var out []knownKey
	for _, w := range keyErr.Want {
		out = append(out, knownKey{key: w.Key, ca: db.caLines[w.Filename][w.Line]})
	}
	return out, nil
}

// knownHostsDB is a parsed set of known_hosts files.
type knownHostsDB struct {
	cb      ssh.HostKeyCallback     // read-only after loading: safe for concurrent dials
	caLines map[string]map[int]bool // per file, its @cert-authority line numbers
	stamps  []fileStamp             // what the files were when parsed
	index   knownIndex              // nil unless every line is plain; read-only
}

// check is the known_hosts host key callback: answered from the index
// when the files allow one, else by knownhosts line by line.
func (db *knownHostsDB) check(address string, remote net.Addr, key ssh.PublicKey) error {
	if db.index == nil {
		return db.cb(address, remote, key)
	}
	return db.index.check(db.cb, address, remote, key)
}

// fileStamp identifies one version of a file cheaply.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stampOf(name string) (fileStamp, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

// knownHostsCache keeps parsed known_hosts files between dials. A gateway
// dials thousands of nodes against the same files, and parsing a large
// file on every dial cost milliseconds of CPU each (about 4 ms for 1,000
// lines). An entry is reused while every file's size, mtime and inode are
// unchanged, so an edited file is picked up by the next dial.
var knownHostsCache struct {
	mu sync.Mutex
	m  map[string]*knownHostsDB // guarded by mu; key: the file names, NUL-joined
	// loading is held while files are parsed, so that the dials of a
	// whole batch starting at once wait for one parse instead of each
	// parsing the files: 400 dials parsing two 5,000-line files at the
	// start of a 10,000-node rollout starved handshakes past their timeout.
	loading sync.Mutex
}

// loadKnownHosts returns the parsed files, from the cache when unchanged.
func loadKnownHosts(files []string) (*knownHostsDB, error) {
	stamps := make([]fileStamp, len(files))
	for i, f := range files {
		st, err := stampOf(f)
		if err != nil {
			return nil, fmt.Errorf("sshexec: known_hosts: %w", err)
		}
		stamps[i] = st
	}
	key := strings.Join(files, "\x00")
	cached := func() *knownHostsDB {
		knownHostsCache.mu.Lock()
		defer knownHostsCache.mu.Unlock()
		if db := knownHostsCache.m[key]; db != nil && slices.Equal(db.stamps, stamps) {
			return db
		}
		return nil
	}
	if db := cached(); db != nil {
		return db, nil
	}
	knownHostsCache.loading.Lock()
	defer knownHostsCache.loading.Unlock()
	if db := cached(); db != nil {
		return db, nil // parsed while this call waited
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, fmt.Errorf("sshexec: known_hosts: %w", err)
	}
	db := &knownHostsDB{cb: cb, caLines: make(map[string]map[int]bool), stamps: stamps}
	for _, f := range files {
		if db.caLines[f], err = certAuthorityLines(f); err != nil {
			return nil, err
		}
	}
	if db.index, err = buildKnownIndex(files); err != nil {
		return nil, err
	}
	knownHostsCache.mu.Lock()
	if knownHostsCache.m == nil {
		knownHostsCache.m = make(map[string]*knownHostsDB)
	}
	knownHostsCache.m[key] = db
	knownHostsCache.mu.Unlock()
	return db, nil
}

// certAuthorityLines returns the numbers of the @cert-authority lines of a
// known_hosts file, numbered as knownhosts numbers them.
func certAuthorityLines(name string) (map[int]bool, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("sshexec: known_hosts: %w", err)
	}
	lines := make(map[int]bool)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[0] == "@cert-authority" {
			lines[n] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sshexec: known_hosts %s: %w", name, err)
	}
	return lines, nil
}

var probeKey = sync.OnceValues(func() (ssh.PublicKey, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sshexec: generate probe key: %w", err)
	}
	return ssh.NewPublicKey(pub)
})

// certAlgorithms are the host certificate algorithms to ask for when a CA is
// known: the CA's own key type says nothing about the certified key's type.
var certAlgorithms = []string{
	ssh.CertAlgoED25519v01,
	ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
	ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01, ssh.CertAlgoRSAv01,
}

// hostKeyAlgorithms lists the algorithms that can produce one of the known
// keys, certificates first as OpenSSH prefers them, so that a node with
// several host keys presents one we can verify rather than one we do not
// know. It returns nil (the library defaults) when nothing usable is known;
// verification then refuses whatever is presented.
func hostKeyAlgorithms(hasCA bool, plain []ssh.PublicKey) []string {
	supported := slices.Concat(ssh.SupportedAlgorithms().HostKeys, ssh.InsecureAlgorithms().HostKeys)
	var algos []string
	add := func(a string) {
		if slices.Contains(supported, a) && !slices.Contains(algos, a) {
			algos = append(algos, a)
		}
	}
	if hasCA {
		for _, a := range certAlgorithms {
			add(a)
		}
	}
	for _, k := range plain {
		switch k.Type() {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
			add(ssh.KeyAlgoRSA)
		case ssh.CertAlgoRSAv01:
			add(ssh.CertAlgoRSASHA512v01)
			add(ssh.CertAlgoRSASHA256v01)
			add(ssh.CertAlgoRSAv01)
		default:
			add(k.Type())
		}
	}
	if len(algos) == 0 {
		return nil
	}
	return algos
}
