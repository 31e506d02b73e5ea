package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// What the scale benchmarks (scale_test.go, fanout_test.go) share: the
// fleet in child processes (bench/internal/fleetd), the whole of Outpost as
// `outpost` processes, and readers of what each process spent.

// Datacenters of the scale benchmarks: one gateway and one fleet process
// each. The gateway names are the ones waitGateways waits for.
var scaleDCs = []string{"dc-a", "dc-b"}

// clientKey is the key the gateways log in with, as the files a gateway
// and a fleet need.
type clientKey struct {
	signer     ssh.Signer
	privateKey string // OpenSSH PEM, for `outpost gateway --ssh-key`
	authorized string // authorized_keys line, for fleetd -client-key
}

func newClientKey(b *testing.B, dir string) clientKey {
	b.Helper()
	key := e2etest.NewSSHKey(b, dir)
	k := clientKey{signer: key.Signer, privateKey: key.File, authorized: filepath.Join(dir, "id_ed25519.pub")}
	if err := os.WriteFile(k.authorized, ssh.MarshalAuthorizedKey(key.Signer.PublicKey()), 0o644); err != nil {
		b.Fatal(err)
	}
	return k
}

// fleetHost is one host of a fleetd manifest.
type fleetHost struct {
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	HealthAddr string `json:"health_addr"`
	Root       string `json:"root"`
}

// currentRelease returns the release id <root>/<deploy path>/current
// points at, "" when there is none.
func (h fleetHost) currentRelease() (string, error) {
	target, err := os.Readlink(filepath.Join(h.Root, e2etest.DeployPath, "current"))
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(target), nil
}

// fleetStats is what fleetd's "stats" command answers.
type fleetStats struct {
	Connections int64 `json:"connections"`
	Execs       int64 `json:"execs"`
	SFTPWrites  int64 `json:"sftp_writes"`
	SFTPBytes   int64 `json:"sftp_bytes"`
}

// fleetProc is a fleetd child process serving part of a fleet.
type fleetProc struct {
	name       string
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	out        *bufio.Reader
	hosts      []fleetHost
	knownHosts string
	done       chan error
}

func buildFleetd(b *testing.B, dir string) string {
	b.Helper()
	return goBuild(b, dir, "fleetd", "github.com/outposthq/outpost/bench/internal/fleetd")
}

// goBuild builds the command pkg into dir/name and returns its path.
func goBuild(b *testing.B, dir, name, pkg string) string {
	b.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// startFleets starts nodes hosts in fleetd processes, one per datacenter
// of scaleDCs, the first taking the remainder.
func startFleets(b *testing.B, fleetd, dir string, nodes int, key clientKey) []*fleetProc {
	b.Helper()
	var fleets []*fleetProc
	for i, dc := range scaleDCs {
		n := nodes / len(scaleDCs)
		if i == 0 {
			n += nodes % len(scaleDCs)
		}
		fleets = append(fleets, startFleetd(b, fleetd, dir, dc, n, key))
	}
	return fleets
}

// startFleetd starts hosts hosts named <name>-NNNN under dir/<name> and
// waits until they serve; the process ends with the benchmark.
func startFleetd(b *testing.B, bin, dir, name string, hosts int, key clientKey) *fleetProc {
	b.Helper()
	f := &fleetProc{name: name, knownHosts: filepath.Join(dir, name+".known_hosts"), done: make(chan error, 1)}
	manifest := filepath.Join(dir, name+".json")
	f.cmd = exec.Command(bin, "-hosts", strconv.Itoa(hosts), "-dir", filepath.Join(dir, name),
		"-client-key", key.authorized, "-prefix", name+"-", "-service-path", e2etest.DeployPath,
		"-manifest", manifest, "-known-hosts", f.knownHosts)
	f.cmd.Stderr = os.Stderr
	var err error
	if f.stdin, err = f.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	f.out = bufio.NewReader(stdout)
	if err := f.cmd.Start(); err != nil {
		b.Fatalf("start fleetd %s: %v", name, err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := f.out.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("fleetd said %q", line)
		}
		ready <- err
	}()
	b.Cleanup(func() {
		f.stdin.Close() // fleetd closes the fleet and exits at EOF
		waited := make(chan error, 1)
		go func() { waited <- f.cmd.Wait() }()
		select {
		case err := <-waited:
			if err != nil {
				b.Errorf("fleetd %s: %v", name, err)
			}
		case <-time.After(time.Minute):
			_ = f.cmd.Process.Kill()
			<-waited
			b.Errorf("fleetd %s did not exit within a minute of EOF", name)
		}
	})
	select {
	case err := <-ready:
		if err != nil {
			b.Fatalf("fleetd %s: %v", name, err)
		}
	case <-time.After(5 * time.Minute):
		b.Fatalf("fleetd %s: not ready after 5 minutes", name)
	}
	data, err := os.ReadFile(manifest)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(data, &f.hosts); err != nil {
		b.Fatalf("fleetd %s manifest: %v", name, err)
	}
	if len(f.hosts) != hosts {
		b.Fatalf("fleetd %s: %d hosts, want %d", name, len(f.hosts), hosts)
	}
	return f
}

// stats asks fleetd for its counters.
func (f *fleetProc) stats(b *testing.B) fleetStats {
	b.Helper()
	if _, err := io.WriteString(f.stdin, "stats\n"); err != nil {
		b.Fatalf("fleetd %s: %v", f.name, err)
	}
	line, err := f.out.ReadString('\n')
	if err != nil {
		b.Fatalf("fleetd %s: %v", f.name, err)
	}
	var s fleetStats
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		b.Fatalf("fleetd %s: stats %q: %v", f.name, line, err)
	}
	return s
}

// procCPU is a process's CPU time in seconds from /proc/<pid>/stat:
// user + system, plus, with children, that of the children it waited for
// (a fleet's shell commands).
func procCPU(b *testing.B, pid int, children bool) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// After the name: state is f[0], so field N of proc(5) is f[N-3].
	fields := []int{14, 15}
	if children {
		fields = append(fields, 16, 17)
	}
	var ticks int64
	for _, n := range fields {
		v, err := strconv.ParseInt(f[n-3], 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat field %d: %v", pid, n, err)
		}
		ticks += v
	}
	return float64(ticks) / clockTicks
}

func (f *fleetProc) cpuSeconds(b *testing.B) float64 { return procCPU(b, f.cmd.Process.Pid, true) }

func (f *fleetProc) peakMB(b *testing.B) float64 {
	b.Helper()
	kb, err := vmHWM(fmt.Sprintf("/proc/%d/status", f.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	return float64(kb) / 1024
}

// inventory lists the nodes of fleets, fleet i in datacenter scaleDCs[i].
func inventory(fleets []*fleetProc) []*outpostv1.Node {
	var nodes []*outpostv1.Node
	for i, f := range fleets {
		for _, h := range f.hosts {
			nodes = append(nodes, &outpostv1.Node{
				Id:         h.Name,
				Address:    h.Addr,
				Datacenter: scaleDCs[i],
				User:       "deploy",
				Labels:     map[string]string{"app": e2etest.App},
			})
		}
	}
	return nodes
}

// outpostSystem is a control plane and one gateway per datacenter, each an
// `outpost` process.
type outpostSystem struct {
	cp          *daemon
	addr        string
	metricsAddr string // the control plane's /metrics
	etcdSocket  string // the embedded etcd's client socket
	gateways    []*daemon
	client      *e2etest.Client
}

type systemConfig struct {
	key         clientKey
	knownHosts  []string
	concurrency int
	// dialCP, when set, returns the address gateway i dials instead of
	// the control plane's (a counting proxy in front of it).
	dialCP func(i int, addr string) string
}

func startSystem(ctx context.Context, b *testing.B, dir, bin string, cfg systemConfig) *outpostSystem {
	b.Helper()
	s := &outpostSystem{etcdSocket: filepath.Join(dir, "cp-data", store.EmbeddedDir, store.EmbeddedClientSocket)}
	s.cp = startDaemon(b, dir, "controlplane", bin, "controlplane",
		"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "cp-data"), "--name", "bench-cp",
		"--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "info")
	s.addr = s.cp.waitLog(b, "control plane ready", "addr")
	s.metricsAddr = s.cp.waitLog(b, "control plane started", "metrics")
	admin, err := pki.LoadCredential(filepath.Join(dir, "cp-data", "admin.pem"))
	if err != nil {
		b.Fatal(err)
	}
	if s.client, err = e2etest.Dial(s.addr, admin); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.client.Close() })
	for i, dc := range scaleDCs {
		name := "gw-" + dc
		token, err := s.client.JoinToken(ctx, name, dc)
		if err != nil {
			b.Fatal(err)
		}
		target := s.addr
		if cfg.dialCP != nil {
			target = cfg.dialCP(i, s.addr)
		}
		args := []string{"gateway",
			"--controlplane", target, "--datacenter", dc, "--name", name,
			"--credential-file", filepath.Join(dir, name+".pem"), "--join-token", token,
			"--ssh-key", cfg.key.privateKey, "--ssh-user", "deploy",
			"--concurrency", strconv.Itoa(cfg.concurrency), "--cache-dir", filepath.Join(dir, "cache-"+dc),
			"--log-format", "json", "--log-level", "warn"}
		for _, kh := range cfg.knownHosts {
			args = append(args, "--known-hosts", kh)
		}
		s.gateways = append(s.gateways, startDaemon(b, dir, "gateway-"+dc, bin, args...))
	}
	return s
}

// deploy creates a rollout of spec and waits until it ends; it fails the
// benchmark unless every one of nodes succeeded.
func (s *outpostSystem) deploy(ctx context.Context, b *testing.B, spec *outpostv1.PlanSpec, digest string, nodes int) (*outpostv1.Rollout, time.Duration) {
	b.Helper()
	start := time.Now()
	r, err := s.client.Create(ctx, spec, digest)
	if err != nil {
		b.Fatal(err)
	}
	// A rollout of many nodes is a big record (every batch lists its
	// nodes): polling it often would cost the control plane CPU that is
	// part of what the benchmarks measure.
	every := 100 * time.Millisecond
	if nodes > 1000 {
		every = time.Second
	}
	done, err := s.client.Wait(ctx, r.GetId(), every, func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) })
	elapsed := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || done.GetNodeCounts().GetSucceeded() != int32(nodes) {
		b.Fatalf("rollout %s ended %v (%v): %q; failures: %s", r.GetId(), done.GetState(), done.GetNodeCounts(), done.GetMessage(), s.failures(ctx, r.GetId()))
	}
	return done, elapsed
}

// failures describes a few failed nodes of a rollout.
func (s *outpostSystem) failures(ctx context.Context, id string) string {
	nodes, err := s.client.Nodes(ctx, id)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, n := range nodes {
		switch n.GetState() {
		case outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.NodeState_NODE_STATE_SKIPPED, outpostv1.NodeState_NODE_STATE_PENDING:
			continue
		}
		out = append(out, fmt.Sprintf("%s %v at %v: %s", n.GetNodeId(), n.GetState(), n.GetStep(), n.GetError()))
		if len(out) == 5 {
			break
		}
	}
	return strings.Join(out, "; ")
}

// metrics returns the control plane's own unlabelled metrics.
func (s *outpostSystem) metrics(b *testing.B) map[string]float64 {
	b.Helper()
	resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// usage is what every process has spent so far.
type usage struct {
	cp, gateways, fleet float64 // CPU seconds
	// fleetCmds is the part of fleet spent by the commands the hosts ran
	// (children of fleetd); the rest is the hosts' SSH servers.
	fleetCmds float64
	etcd      etcdCounts
}

func (s *outpostSystem) usage(b *testing.B, fleets []*fleetProc) usage {
	b.Helper()
	u := usage{cp: s.cp.cpuSeconds(b), etcd: s.etcdCounts(b)}
	for _, g := range s.gateways {
		u.gateways += g.cpuSeconds(b)
	}
	for _, f := range fleets {
		all := f.cpuSeconds(b)
		u.fleet += all
		u.fleetCmds += all - procCPU(b, f.cmd.Process.Pid, false)
	}
	return u
}

// etcdCounts are counters from the embedded etcd's own Prometheus metrics.
type etcdCounts struct {
	// puts counts keys written (etcd_mvcc_put_total): a transaction of 100
	// puts counts 100.
	puts float64
	// proposals counts write requests that went through raft
	// (etcd_server_proposals_committed_total): a transaction counts 1.
	proposals float64
	// deletes counts deleted keys (etcd_mvcc_delete_total).
	deletes float64
}

// etcdCounts scrapes /metrics from the control plane's embedded etcd.
func (s *outpostSystem) etcdCounts(b *testing.B) etcdCounts {
	b.Helper()
	m := s.etcdMetrics(b)
	return etcdCounts{puts: m["etcd_mvcc_put_total"], proposals: m["etcd_server_proposals_committed_total"], deletes: m["etcd_mvcc_delete_total"]}
}

// etcdMetrics returns the embedded etcd's unlabelled metrics, read from
// its client socket (which only the control plane's user reaches).
func (s *outpostSystem) etcdMetrics(b *testing.B) map[string]float64 {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", s.etcdSocket)
		},
	}}
	resp, err := client.Get("http://etcd/metrics")
	if err != nil {
		b.Fatalf("etcd metrics on %s: %v", s.etcdSocket, err)
	}
	defer resp.Body.Close()
	m := parseMetrics(resp.Body)
	if _, ok := m["etcd_mvcc_put_total"]; !ok {
		b.Fatalf("%s serves no etcd_mvcc_put_total", s.etcdSocket)
	}
	return m
}

// etcdHistory reads the embedded etcd's history: revision returns the
// current revision, and putsByKind counts the keys written between two
// revisions by kind of key, to say where the writes went.
type etcdHistory struct{ client *clientv3.Client }

func (s *outpostSystem) etcdHistory(b *testing.B) etcdHistory {
	b.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + s.etcdSocket}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return etcdHistory{client: c}
}

func (h etcdHistory) revision(ctx context.Context, b *testing.B) int64 {
	b.Helper()
	resp, err := h.client.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// putsByKind replays the history after revision from up to to.
func (h etcdHistory) putsByKind(ctx context.Context, b *testing.B, from, to int64) map[string]int {
	b.Helper()
	counts := map[string]int{}
	if to <= from {
		return counts
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range h.client.Watch(wctx, "/", clientv3.WithPrefix(), clientv3.WithRev(from+1)) {
		if err := wr.Err(); err != nil {
			b.Fatalf("etcd history: %v", err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision > to {
				return counts
			}
			if ev.Type == clientv3.EventTypePut {
				counts[keyKind(string(ev.Kv.Key))]++
			}
			if ev.Kv.ModRevision == to {
				return counts
			}
		}
	}
	b.Fatal("etcd history: watch ended")
	return nil
}

// keyKind names what an Outpost key holds: the collection, with a
// rollout's node records apart from the rollout's own record.
func keyKind(key string) string {
	rest, ok := strings.CutPrefix(key, store.Root)
	if !ok {
		return "other"
	}
	kind, rest, _ := strings.Cut(rest, "/")
	if kind == "rollouts" && strings.Contains(rest, "/nodes/") {
		return "rollout-nodes"
	}
	return kind
}

// parseMetrics reads the unlabelled samples of a Prometheus text page.
func parseMetrics(r io.Reader) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

// rssSampler records the peak anonymous and file-backed resident memory
// of a process (RssAnon, RssFile in /proc/pid/status) while it runs:
// VmHWM says how much, these say whether it is heap or mapped files (the
// embedded etcd's bbolt database is mapped).
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	// peak values in kB, valid after Stop.
	anon, file int64
	// anonAt is when anon peaked; log lists RssAnon every few seconds.
	anonAt time.Duration
	log    []string
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for i := 0; ; i++ {
			if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, line := range strings.Split(string(data), "\n") {
					f := strings.Fields(line)
					if len(f) != 3 {
						continue
					}
					v, _ := strconv.ParseInt(f[1], 10, 64)
					switch f[0] {
					case "RssAnon:":
						if v > s.anon {
							s.anon, s.anonAt = v, time.Since(start)
						}
						if i%20 == 0 {
							s.log = append(s.log, fmt.Sprintf("%.0fs:%dMB", time.Since(start).Seconds(), v/1024))
						}
					case "RssFile:":
						s.file = max(s.file, v)
					}
				}
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the peaks in MB.
func (s *rssSampler) Stop() (anonMB, fileMB float64) {
	close(s.stop)
	<-s.done
	return float64(s.anon) / 1024, float64(s.file) / 1024
}

// raiseFileLimit lifts the open files limit to its hard maximum and skips
// the benchmark when that is below need.
func raiseFileLimit(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < need {
		b.Skipf("open files limit %d, need about %d", lim.Cur, need)
	}
}

// envInt returns the integer in environment variable name, or def; the
// benchmarks' sizes can be lowered this way while working on them.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
