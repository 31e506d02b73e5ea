package e2etest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Conventions shared by the tests, the benchmark and the demo (COMMON.md):
// the deploy path is relative to the login's home (the host's root), the
// health endpoint listens on HealthPort of each host's own IP.
const (
	DeployPath = "app"
	HealthPort = simfleet.DefaultHealthPort
	HealthPath = "/health"
	// App labels every node of an e2e fleet.
	App = "billing-api"
)

// Fleet is an in-process SSH fleet plus what a gateway needs to reach it:
// a key the hosts accept (in memory and as a file) and a known_hosts file.
type Fleet struct {
	*simfleet.Fleet
	// Signer is the key every host accepts, for any user name.
	Signer ssh.Signer
	// KeyFile holds Signer's private key in OpenSSH PEM form, for
	// `outpost gateway --ssh-key`.
	KeyFile string
	// KnownHosts lists every host's key, for the gateway's known_hosts.
	KnownHosts string
}

// StartFleet starts hosts hosts under dir and closes them when tb ends.
// Their commands run through /bin/sh.
func StartFleet(tb testing.TB, hosts int, dir string) *Fleet {
	tb.Helper()
	return StartFleetShell(tb, hosts, dir, simfleet.ShellProcess)
}

// StartFleetShell is StartFleet with the hosts' shell chosen: benchmarks
// of many hosts use simfleet.ShellInterp.
func StartFleetShell(tb testing.TB, hosts int, dir string, shell simfleet.Shell) *Fleet {
	tb.Helper()
	key := NewSSHKey(tb, dir)
	signer := key.Signer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fl, err := simfleet.Start(ctx, simfleet.Config{
		Hosts:       hosts,
		Dir:         filepath.Join(dir, "hosts"),
		ClientKeys:  []ssh.PublicKey{signer.PublicKey()},
		ServicePath: DeployPath,
		Shell:       shell,
	})
	if err != nil {
		tb.Fatalf("start fleet: %v", err)
	}
	tb.Cleanup(func() {
		if err := fl.Close(); err != nil {
			tb.Errorf("close fleet: %v", err)
		}
	})
	f := &Fleet{
		Fleet:      fl,
		Signer:     signer,
		KeyFile:    key.File,
		KnownHosts: filepath.Join(dir, "known_hosts"),
	}
	if err := fl.WriteKnownHosts(f.KnownHosts); err != nil {
		tb.Fatal(err)
	}
	return f
}

// NodeID names the node of host i (from 0); ids sort like the hosts.
func NodeID(i int) string { return fmt.Sprintf("srv-%05d", i+1) }

// Nodes returns the inventory of the fleet: node i is host i, labelled
// app=App, in datacenter dcOf(i).
func (f *Fleet) Nodes(dcOf func(i int) string) []*outpostv1.Node {
	hosts := f.Hosts()
	nodes := make([]*outpostv1.Node, len(hosts))
	for i, h := range hosts {
		nodes[i] = &outpostv1.Node{
			Id:         NodeID(i),
			Address:    h.Addr,
			Datacenter: dcOf(i),
			User:       "deploy",
			Labels:     map[string]string{"app": App},
		}
	}
	return nodes
}

// HistoryEntry is one line of <deploy path>/.outpost/history as the
// deployer writes it.
type HistoryEntry struct {
	Time     time.Time `json:"time"`
	Rollout  string    `json:"rollout"`
	Owner    string    `json:"owner"`
	Epoch    int64     `json:"epoch"`
	Action   string    `json:"action"` // "activate" or "rollback"
	Release  string    `json:"release"`
	Previous string    `json:"previous"`
	Result   string    `json:"result"` // "succeeded" or "failed: ..."
}

// History reads a host's deployment history; none yet is an empty list.
func History(h *simfleet.Host) ([]HistoryEntry, error) {
	data, err := os.ReadFile(filepath.Join(h.ServiceDir(), ".outpost", "history"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []HistoryEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var e HistoryEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("%s: history line %q: %w", h.Name, line, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Activations counts the successful activations of release in entries.
func Activations(entries []HistoryEntry, release string) int {
	n := 0
	for _, e := range entries {
		if e.Action == "activate" && e.Release == release && e.Result == "succeeded" {
			n++
		}
	}
	return n
}

// Current returns the release id that <deploy path>/current points at,
// and "" when there is no current link.
func Current(h *simfleet.Host) (string, error) {
	target, err := os.Readlink(filepath.Join(h.ServiceDir(), "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	dir, id := filepath.Split(filepath.Clean(target))
	if filepath.Clean(dir) != "releases" {
		return "", fmt.Errorf("%s: current -> %q, want releases/<id>", h.Name, target)
	}
	return id, nil
}

// Locked reports whether a deployment holds the host's lock.
func Locked(h *simfleet.Host) bool {
	_, err := os.Lstat(filepath.Join(h.ServiceDir(), ".outpost", "lock"))
	return err == nil
}

// healthClient goes straight to the host (no proxy) and gives up quickly.
var healthClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// Health returns the HTTP status of the host's health endpoint, the way
// the plan's health check sees it.
func Health(ctx context.Context, h *simfleet.Host) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.HealthAddr+HealthPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
