package sshexec

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// x/crypto's knownhosts compares the address with every line of every
// file, twice per dial here (knownKeys, then the handshake's check): with
// a 10,000-line known_hosts, as a gateway of a 10,000-node fleet has, that
// was 14 s of a 10,000-node rollout's CPU profile. knownIndex answers the
// same questions from a map when every line is a plain one, which is what
// `ssh-keyscan` and configuration management write. Files with anything
// else (@cert-authority, @revoked, hashed names, wildcards, negations)
// are not indexed, and knownhosts' own callback answers, line by line.

// hostPort is an address the way knownhosts compares it: host and port
// as written, port "22" when a pattern has none.
type hostPort struct{ host, port string }

// knownIndex maps each host of plain known_hosts lines to their keys, in
// file and line order, as knownhosts' KeyError would list them.
type knownIndex map[hostPort][]indexedKey

type indexedKey struct {
	known knownhosts.KnownKey
	blob  []byte // known.Key.Marshal(), which may differ from the file's bytes
}

// buildKnownIndex indexes files, or returns nil when a line is not plain.
// The files have been parsed by knownhosts.New already, so every line is
// well formed; lines are split and numbered the way knownhosts does.
func buildKnownIndex(files []string) (knownIndex, error) {
	idx := knownIndex{}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("sshexec: known_hosts: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := bytes.Trim(sc.Bytes(), " \t")
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			patterns, rest := nextWord(line)
			keyType, rest := nextWord(rest)
			blob64, _ := nextWord(rest)
			if patterns == "" || patterns[0] == '@' || patterns[0] == '|' || strings.ContainsAny(patterns, "*?!") {
				return nil, nil
			}
			blob, err := base64.StdEncoding.DecodeString(blob64)
			if err != nil {
				return nil, nil // knownhosts accepted it; let it answer
			}
			key, err := ssh.ParsePublicKey(blob)
			if err != nil || key.Type() != keyType {
				return nil, nil
			}
			// The key as re-encoded, not the file's bytes: knownhosts
			// compares Marshal() of both keys, and a blob may encode a key
			// in a longer form (an RSA exponent with a leading zero).
			entry := indexedKey{known: knownhosts.KnownKey{Key: key, Filename: name, Line: n}, blob: key.Marshal()}
			var seen []hostPort // a line matches once however often it names a host
			for _, p := range strings.Split(patterns, ",") {
				if p == "" {
					continue
				}
				hp, ok := patternAddr(p)
				if !ok {
					return nil, nil
				}
				if !slices.Contains(seen, hp) {
					seen = append(seen, hp)
					idx[hp] = append(idx[hp], entry)
				}
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("sshexec: known_hosts %s: %w", name, err)
		}
	}
	return idx, nil
}

// nextWord splits off the first word as knownhosts does: at a space or
// tab, then trimming spaces and tabs.
func nextWord(line []byte) (string, []byte) {
	i := bytes.IndexAny(line, "\t ")
	if i == -1 {
		return string(line), nil
	}
	return string(line[:i]), bytes.Trim(line[i:], " \t")
}

// patternAddr is knownhosts' reading of a plain host pattern.
func patternAddr(p string) (hostPort, bool) {
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		if p[0] == '[' {
			return hostPort{}, false
		}
		return hostPort{host: p, port: "22"}, true
	}
	return hostPort{host: host, port: port}, true
}

// check answers like knownhosts' callback for the files it indexes:
// nil when key is known for address, else a *knownhosts.KeyError listing
// the keys known for it. Certificates and addresses it cannot split go to
// fallback, which gives knownhosts' own answer.
func (idx knownIndex) check(fallback ssh.HostKeyCallback, address string, remote net.Addr, key ssh.PublicKey) error {
	if _, isCert := key.(*ssh.Certificate); isCert || remote == nil || address == "" {
		return fallback(address, remote, key)
	}
	if _, _, err := net.SplitHostPort(remote.String()); err != nil {
		return fallback(address, remote, key)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fallback(address, remote, key)
	}
	entries := idx[hostPort{host: host, port: port}]
	blob := key.Marshal()
	var want []knownhosts.KnownKey
	for _, e := range entries {
		if bytes.Equal(e.blob, blob) {
			return nil
		}
		want = append(want, e.known)
	}
	return &knownhosts.KeyError{Want: want}
}
