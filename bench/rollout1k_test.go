package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Shape of BenchmarkRollout1k.
const (
	rollout1kNodes       = 1000
	rollout1kBatch       = "10%" // 10 batches of 100 nodes
	rollout1kConcurrency = 50    // per gateway: a batch of 100 runs at once on 2 gateways
	rollout1kArtifact    = 1 << 10
	// Goals of issue 3.
	rollout1kGoalSeconds = 30
	rollout1kGoalMB      = 300
)

// BenchmarkRollout1k measures a whole rolling deployment of a 1 KiB
// artifact (unpack none, hooks `true`, a TCP health check) to 1,000
// in-process SSH fleet nodes in 2 datacenters, each served by its own
// gateway: wall time from CreateRollout to SUCCEEDED, and the peak RSS
// (VmHWM) of the control plane and of each gateway. Those run as separate
// `outpost` processes built from ./cli/outpost, so their memory is their
// own; the fleet runs in the benchmark process, its commands in its
// in-process shell (simfleet.ShellInterp: the deployer's scripts without
// a fork per utility, so the figure is Outpost's). Every iteration is a new
// revision (a new release on every node). Run it with -benchtime 1x (an
// iteration takes seconds).
//
// Goals (issue 3): under 30 s per rollout, each daemon under 300 MB.
func BenchmarkRollout1k(b *testing.B) {
	raiseNoFile(b)
	dir := b.TempDir()
	bin := buildOutpost(b, dir)

	fleet := e2etest.StartFleetShell(b, rollout1kNodes, dir, simfleet.ShellInterp)
	dcOf := func(i int) string { return []string{"dc-a", "dc-b"}[i%2] }

	cp := startDaemon(b, dir, "controlplane", bin, "controlplane",
		"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "cp-data"), "--name", "bench-cp",
		"--log-format", "json", "--log-level", "info")
	addr := cp.waitLog(b, "control plane ready", "addr")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	admin, err := pki.LoadCredential(filepath.Join(dir, "cp-data", "admin.pem"))
	if err != nil {
		b.Fatal(err)
	}
	client, err := e2etest.Dial(addr, admin)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	var gateways []*daemon
	for _, dc := range []string{"dc-a", "dc-b"} {
		token, err := client.JoinToken(ctx, "gw-"+dc, dc)
		if err != nil {
			b.Fatal(err)
		}
		gw := startDaemon(b, dir, "gateway-"+dc, bin, "gateway",
			"--controlplane", addr, "--datacenter", dc, "--name", "gw-"+dc,
			"--credential-file", filepath.Join(dir, "gw-"+dc+".pem"), "--join-token", token,
			"--ssh-key", fleet.KeyFile, "--known-hosts", fleet.KnownHosts, "--ssh-user", "deploy",
			"--concurrency", strconv.Itoa(rollout1kConcurrency), "--cache-dir", filepath.Join(dir, "cache-"+dc),
			"--log-format", "json", "--log-level", "warn")
		gateways = append(gateways, gw)
	}
	if err := client.Apply(ctx, fleet.Nodes(dcOf)); err != nil {
		b.Fatal(err)
	}
	artifact := filepath.Join(dir, "app.bin")
	payload := make([]byte, rollout1kArtifact)
	rand.Read(payload)
	if err := os.WriteFile(artifact, payload, 0o644); err != nil {
		b.Fatal(err)
	}
	digest, err := client.Upload(ctx, artifact)
	if err != nil {
		b.Fatal(err)
	}
	spec := &outpostv1.PlanSpec{
		App:      e2etest.App,
		Artifact: &outpostv1.PlanArtifact{Path: "app.bin", Unpack: "none"},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": e2etest.App}},
		Deploy:   &outpostv1.PlanDeploy{Path: e2etest.DeployPath},
		Hooks:    &outpostv1.Hooks{Stop: "true", Start: "true"},
		Health:   &outpostv1.PlanHealth{Tcp: &outpostv1.TcpHealthCheck{Port: e2etest.HealthPort}, Timeout: "10s", Interval: "100ms"},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: rollout1kBatch, MaxFailPercent: new(int32)},
	}
	waitGateways(ctx, b, cp)

	var total time.Duration
	cpu0 := cpuSeconds(b, cp, gateways)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r, err := client.Create(ctx, spec, digest)
		if err != nil {
			b.Fatal(err)
		}
		done, err := client.Wait(ctx, r.GetId(), 50*time.Millisecond, func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) })
		elapsed := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		total += elapsed
		b.StopTimer()
		if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || done.GetNodeCounts().GetSucceeded() != rollout1kNodes {
			b.Fatalf("rollout %s ended %v (%v): %q", r.GetId(), done.GetState(), done.GetNodeCounts(), done.GetMessage())
		}
		// Believe the hosts, not only the API.
		for _, h := range fleet.Hosts() {
			if cur, err := e2etest.Current(h); err != nil || cur != r.GetReleaseId() {
				b.Fatalf("%s: current -> %q (%v), want %s", h.Name, cur, err, r.GetReleaseId())
			}
		}
		b.StartTimer()
	}
	b.StopTimer()

	secs := total.Seconds() / float64(b.N)
	b.ReportMetric(secs, "s/rollout")
	b.ReportMetric(rollout1kNodes/secs, "nodes/s")
	// CPU per rollout says where the time goes when the machine is
	// shared: the fleet's shell commands stand in for work that real
	// nodes do on their own CPUs.
	cpu1 := cpuSeconds(b, cp, gateways)
	b.ReportMetric((cpu1.cp-cpu0.cp)/float64(b.N), "cp-cpu-s")
	b.ReportMetric((cpu1.gateways-cpu0.gateways)/float64(b.N), "gateways-cpu-s")
	b.ReportMetric((cpu1.fleet-cpu0.fleet)/float64(b.N), "fleet-cpu-s")
	cpMB := cp.peakMB(b)
	b.ReportMetric(cpMB, "cp-peak-MB")
	gwMB := 0.0
	for _, gw := range gateways {
		gwMB = max(gwMB, gw.peakMB(b))
	}
	b.ReportMetric(gwMB, "gateway-peak-MB")
	b.ReportMetric(selfPeakMB(b), "fleet-peak-MB")
	if secs > rollout1kGoalSeconds || cpMB > rollout1kGoalMB || gwMB > rollout1kGoalMB {
		b.Logf("GOAL MISSED: %.1f s per rollout (goal < %d s), control plane %.0f MB, gateways %.0f MB (goal < %d MB each)",
			secs, rollout1kGoalSeconds, cpMB, gwMB, rollout1kGoalMB)
	}
}

// raiseNoFile lifts the open files limit to its hard maximum: the fleet
// holds two listeners per host plus every SSH connection, and the
// daemons inherit the limit.
func raiseNoFile(b *testing.B) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if need := uint64(4*rollout1kNodes + 1000); lim.Cur < need {
		b.Skipf("open files limit %d, need about %d", lim.Cur, need)
	}
}

// buildOutpost builds the outpost binary into dir.
func buildOutpost(b *testing.B, dir string) string {
	b.Helper()
	return goBuild(b, dir, "outpost", "github.com/outposthq/outpost/cli/outpost")
}

// daemon is an outpost child process whose logs go to a file
// (e2etest.Daemon, which stops it when the benchmark ends).
type daemon struct{ *e2etest.Daemon }

// startDaemon starts bin with args in dir.
func startDaemon(b *testing.B, dir, name, bin string, args ...string) *daemon {
	b.Helper()
	return &daemon{e2etest.StartDaemon(b, dir, name, bin, args...)}
}

// waitLog waits for a JSON log line whose msg starts with msg and returns
// its field key.
func (d *daemon) waitLog(b *testing.B, msg, key string) string {
	b.Helper()
	return d.WaitLog(b, msg, key, nil)
}

// waitGateways waits until the control plane logged both gateways'
// connections, so the first rollout does not measure their start.
func waitGateways(ctx context.Context, b *testing.B, cp *daemon) {
	b.Helper()
	for ctx.Err() == nil {
		seen := map[string]bool{}
		f, err := os.Open(cp.Log)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "gateway connected" {
				if g, ok := line["gateway"].(string); ok {
					seen[g] = true
				}
			}
		}
		f.Close()
		if seen["gw-dc-a"] && seen["gw-dc-b"] {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("gateways did not connect:\n%s", cp.Tail())
}

// cpuUse is CPU time in seconds (user + system) consumed so far.
type cpuUse struct {
	cp, gateways float64
	// fleet is this process (the in-process fleet, the client) and the
	// children it reaped: the shell commands the hosts ran.
	fleet float64
}

func cpuSeconds(b *testing.B, cp *daemon, gateways []*daemon) cpuUse {
	b.Helper()
	var u cpuUse
	u.cp = cp.cpuSeconds(b)
	for _, g := range gateways {
		u.gateways += g.cpuSeconds(b)
	}
	var self, kids syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids); err != nil {
		b.Fatal(err)
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	u.fleet = tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
	return u
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the daemon's user + system CPU time so far, from
// /proc/<pid>/stat (fields 14 and 15, after the parenthesized name).
func (d *daemon) cpuSeconds(b *testing.B) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.Pid()))
	if err != nil {
		b.Fatalf("%s: %v", d.Name, err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("%s: short /proc stat %q", d.Name, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("%s: /proc stat %q: %v %v", d.Name, s, err1, err2)
	}
	return float64(utime+stime) / clockTicks
}

// peakMB is the daemon's peak resident set (VmHWM) in MB.
func (d *daemon) peakMB(b *testing.B) float64 {
	b.Helper()
	kb, err := vmHWM(fmt.Sprintf("/proc/%d/status", d.Pid()))
	if err != nil {
		b.Fatalf("%s: %v", d.Name, err)
	}
	return float64(kb) / 1024
}

// selfPeakMB is the benchmark process's peak resident set in MB: the
// fleet, for reference.
func selfPeakMB(b *testing.B) float64 {
	kb, err := vmHWM("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	return float64(kb) / 1024
}

// vmHWM reads the VmHWM line ("VmHWM:   123456 kB") of a status file.
func vmHWM(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%s: odd VmHWM line %q", path, line)
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no VmHWM line", path)
}
