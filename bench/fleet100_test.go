package bench

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Shape of BenchmarkFleet100 (issue 7, benchmark 1).
const (
	fleet100Nodes       = 100
	fleet100Payload     = 5 << 20 // random bytes in the release: a 5 MiB tar.gz
	fleet100Concurrency = 25      // per gateway: 50 nodes at once on 2 gateways
	// The baseline's health port; Outpost's is healthPort, on the same IPs.
	fleet100ScriptHealthPort = healthPort + 1
)

// fleet100Parallel are the ControlMaster script's parallelisms: 10 is what
// such jobs are usually given, 25 is generous, 50 is Outpost's own.
var fleet100Parallel = []int{10, 25, 50}

// fleet100LeanParallel are the lean script's: Outpost's 50 and half that.
// Outpost's ratios take the better of the two for each figure.
var fleet100LeanParallel = []int{25, 50}

// BenchmarkFleet100 deploys a 5 MiB tar.gz release with the full
// lifecycle (lock, precheck, upload, verify, unpack, stop, switch, start,
// HTTP health, prune, unlock) to 100 real OpenSSH sshd servers on their
// own loopback IPs, with three tools, each deploying the same artifact to
// the same servers (into different directories, each with its own health
// endpoint), a new release every iteration:
//
//   - bench/testdata/parallel-ssh-deploy.sh: the ControlMaster script of
//     BenchmarkLifecycle (an ssh command per step over one connection,
//     scp, curl) for every server, PARALLEL at a time with xargs -P;
//   - bench/testdata/lean-ssh-deploy.sh: the leanest script, one ssh per
//     server running every step in one remote shell, the artifact on its
//     stdin;
//   - Outpost, last (a control plane and 2 gateways as `outpost`
//     processes, one rolling batch of all nodes, 25 at once per gateway),
//     whose sub-benchmark also reports the ratios against the scripts
//     measured before it in the same run.
//
// On one machine the 100 servers' own CPU bounds every tool's wall time,
// so the goals are two figures (issue 17): Outpost's wall time within
// 1.15 × the machine's floor (wall/floor: all CPU the run consumed ÷
// cores), and the servers' CPU per node no higher than the lean
// script's (servers/lean ≤ 1). See fleetFigures for every figure.
func BenchmarkFleet100(b *testing.B) {
	dir := b.TempDir()
	key := newClientKey(b, dir)
	release := buildPaddedRelease(b, dir, fleet100Payload)
	nodes := startSSHDFleet(b, dir, key.signer, fleet100Nodes)
	knownHosts := filepath.Join(dir, "known_hosts")
	var kh bytes.Buffer
	for _, n := range nodes {
		kh.WriteString(n.srv.KnownHostsLine() + "\n")
	}
	if err := os.WriteFile(knownHosts, kh.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}

	optsFile := filepath.Join(dir, "ssh-opts")
	opts := []string{"-F", "/dev/null", "-i", key.privateKey, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}
	if err := os.WriteFile(optsFile, []byte(strings.Join(opts, "\n")+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	nodesFile := filepath.Join(dir, "nodes")
	var lines bytes.Buffer
	for _, n := range nodes {
		fmt.Fprintf(&lines, "%s@%s %d %s http://%s:%d/health\n", n.srv.User, n.srv.IP, n.srv.Port,
			filepath.Join(n.home, "script-app"), n.srv.IP, fleet100ScriptHealthPort)
	}
	if err := os.WriteFile(nodesFile, lines.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	// The scripts' figures of this run, for Outpost's ratios; none when
	// a filter left a script out.
	var controlMaster, lean []fleetFigures
	release0 := 0
	script := func(b *testing.B, name string, p int) fleetFigures {
		meter := startFleetMeter(b)
		var tool time.Duration // the script's process tree: bash, xargs, ssh, scp, curl
		for b.Loop() {
			release0++
			rel := fmt.Sprintf("s%d", release0)
			cmd := exec.Command("bash", "testdata/"+name, strconv.Itoa(p), nodesFile, optsFile,
				rel, release.Path, release.SHA256)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%s -P %d: %v\n%s", name, p, err, out)
			}
			tool += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			b.StopTimer()
			for _, n := range nodes {
				if cur := currentOf(b, filepath.Join(n.home, "script-app")); cur != rel {
					b.Fatalf("%s: current -> %q, want %s", n.name, cur, rel)
				}
			}
			b.StartTimer()
		}
		f := meter.stop(b, tool.Seconds())
		f.report(b)
		return f
	}
	for _, p := range fleet100Parallel {
		b.Run(fmt.Sprintf("tool=parallel-ssh-P%d", p), func(b *testing.B) {
			controlMaster = append(controlMaster, script(b, "parallel-ssh-deploy.sh", p))
		})
	}
	for _, p := range fleet100LeanParallel {
		b.Run(fmt.Sprintf("tool=lean-ssh-P%d", p), func(b *testing.B) {
			lean = append(lean, script(b, "lean-ssh-deploy.sh", p))
		})
	}

	bin := buildOutpost(b, dir)
	b.Run("tool=outpost", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		// A system and an artifact of its own for each run of this
		// function: its cleanup stops the system, and a new artifact
		// gives new release ids, so no node has the release already.
		dir := b.TempDir()
		release := buildPaddedRelease(b, dir, fleet100Payload)
		sys := startSystem(ctx, b, dir, bin, systemConfig{
			key:         key,
			knownHosts:  []string{knownHosts},
			concurrency: fleet100Concurrency,
		})
		var inv []*outpostv1.Node
		for i, n := range nodes {
			inv = append(inv, &outpostv1.Node{
				Id: n.name, Address: n.srv.Addr, User: n.srv.User,
				Datacenter: scaleDCs[i%len(scaleDCs)], Labels: map[string]string{"app": e2etest.App},
			})
		}
		if err := sys.client.Apply(ctx, inv); err != nil {
			b.Fatal(err)
		}
		digest, err := sys.client.Upload(ctx, release.Path)
		if err != nil {
			b.Fatal(err)
		}
		maxFail := int32(0)
		spec := &outpostv1.PlanSpec{
			App:      e2etest.App,
			Artifact: &outpostv1.PlanArtifact{Path: filepath.Base(release.Path), Unpack: "tar"},
			Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": e2etest.App}},
			// Relative to each server's SFTP start directory, its home here.
			Deploy: &outpostv1.PlanDeploy{Path: "outpost-app", KeepReleases: 5},
			Hooks:  &outpostv1.Hooks{Start: "sh bin/start", Stop: "sh bin/stop"},
			Health: &outpostv1.PlanHealth{
				Http:     &outpostv1.HttpHealthCheck{Port: healthPort, Path: "/health"},
				Timeout:  "5s",
				Interval: "200ms",
			},
			Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%", MaxFailPercent: &maxFail},
		}
		waitGateways(ctx, b, sys.cp)
		cpu0 := sys.usage(b, nil)
		meter := startFleetMeter(b)
		for b.Loop() {
			r, _ := sys.deploy(ctx, b, spec, digest, len(nodes))
			b.StopTimer()
			for _, n := range nodes {
				if cur := currentOf(b, filepath.Join(n.home, "outpost-app")); cur != r.GetReleaseId() {
					b.Fatalf("%s: current -> %q, want %s", n.name, cur, r.GetReleaseId())
				}
			}
			b.StartTimer()
		}
		cpu1 := sys.usage(b, nil)
		f := meter.stop(b, cpu1.cp-cpu0.cp+cpu1.gateways-cpu0.gateways)
		f.report(b)
		b.ReportMetric((cpu1.cp-cpu0.cp)/float64(b.N), "cp-cpu-s/fleet")
		b.ReportMetric((cpu1.gateways-cpu0.gateways)/float64(b.N), "gw-cpu-s/fleet")
		// Same-run ratios against each script's best parallelism for
		// the figure: above 1, Outpost is worse.
		wall := func(f fleetFigures) float64 { return f.wall }
		servers := func(f fleetFigures) float64 { return f.servers }
		if len(lean) > 0 {
			b.ReportMetric(f.servers/bestOf(lean, servers), "servers/lean")
			b.ReportMetric(f.wall/bestOf(lean, wall), "wall/lean")
		}
		if len(controlMaster) > 0 {
			b.ReportMetric(f.servers/bestOf(controlMaster, servers), "servers/controlmaster")
			b.ReportMetric(f.wall/bestOf(controlMaster, wall), "wall/controlmaster")
		}
		b.Logf("GOAL wall/floor %.3f (≤ 1.15; by process trees %.3f), servers/lean %.3f (≤ 1)",
			f.wall/f.floor(), f.wall/f.treesFloor(), ratio(f.servers, bestOf(lean, servers)))
		b.Logf("mean step durations (s): %s", stepDurations(b, sys))
	})
}

// fleetMeter measures a tool's deployments to the fleet: CPU machine-wide
// and by process tree, from its start to stop.
type fleetMeter struct {
	machine, servers, self float64
}

func startFleetMeter(b *testing.B) fleetMeter {
	waitSSHDsIdle(b)
	return fleetMeter{machine: machineCPU(b), servers: sshdCPU(b), self: selfCPU(b)}
}

// stop returns the figures per deployment of the fleet since the meter
// started; tool is the tool's own CPU over the same deployments.
func (m fleetMeter) stop(b *testing.B, tool float64) fleetFigures {
	b.Helper()
	n := float64(b.N)
	wall := b.Elapsed().Seconds() / n
	waitSSHDsIdle(b)
	return fleetFigures{
		wall:    wall,
		machine: (machineCPU(b) - m.machine) / n,
		servers: (sshdCPU(b) - m.servers) / n,
		tool:    tool / n,
		self:    (selfCPU(b) - m.self) / n,
	}
}

// fleetFigures are one tool's figures per deployment to the fleet, in
// seconds.
type fleetFigures struct {
	wall float64
	// machine is every CPU's busy time machine-wide (/proc/stat: user,
	// nice, system, irq, softirq, steal) over the run: all the run
	// consumed, and whatever else ran on the machine then.
	machine float64
	// servers is the sshd trees' CPU: the connections, sessions and
	// every command they ran.
	servers float64
	// tool is the tool's own CPU: Outpost's control plane and gateways,
	// a script's process tree (bash, xargs, ssh, scp, curl).
	tool float64
	// self is the benchmark process's: the health endpoints (and, for
	// Outpost, the client that watches the rollout).
	self float64
}

// floor is the machine's floor: the shortest wall time the CPU the run
// consumed allows on this machine's cores.
func (f fleetFigures) floor() float64 { return f.machine / float64(runtime.NumCPU()) }

// treesFloor is the floor from the process trees the run started,
// which leaves out other load on the machine.
func (f fleetFigures) treesFloor() float64 {
	return (f.servers + f.tool + f.self) / float64(runtime.NumCPU())
}

func (f fleetFigures) report(b *testing.B) {
	b.ReportMetric(f.wall, "s/fleet")
	b.ReportMetric(f.machine, "machine-cpu-s/fleet")
	b.ReportMetric(f.floor(), "floor-s/fleet")
	b.ReportMetric(f.wall/f.floor(), "wall/floor")
	b.ReportMetric(f.treesFloor(), "trees-floor-s/fleet")
	b.ReportMetric(f.wall/f.treesFloor(), "wall/trees-floor")
	b.ReportMetric(f.servers, "servers-cpu-s/fleet")
	b.ReportMetric(f.servers*1000/fleet100Nodes, "servers-cpu-ms/node")
	b.ReportMetric(f.tool, "tool-cpu-s/fleet")
	b.ReportMetric(f.self, "bench-cpu-s/fleet")
}

// bestOf is the lowest of a figure over a script's runs at its several
// parallelisms; 0 when none ran.
func bestOf(runs []fleetFigures, figure func(fleetFigures) float64) float64 {
	best := 0.0
	for i, f := range runs {
		if v := figure(f); i == 0 || v < best {
			best = v
		}
	}
	return best
}

// ratio is a ÷ b, NaN when b was not measured.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// sshdCPU is the CPU time, in seconds, of the servers' side: every sshd
// this process started (the fleet's) with the connections, sessions and
// commands it has reaped. A connection counts once it has ended.
func sshdCPU(b *testing.B) float64 {
	b.Helper()
	total := 0.0
	for _, pid := range fleetSSHDs(b) {
		total += procCPU(b, pid, true)
	}
	return total
}

// fleetSSHDs are the sshd processes this process started: the fleet's
// listeners.
func fleetSSHDs(b *testing.B) []int {
	b.Helper()
	var pids []int
	for _, pid := range childrenOf(b, "self") {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "sshd" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// childrenOf lists the child processes of pid ("self" for this one).
func childrenOf(b *testing.B, pid string) []int {
	b.Helper()
	tasks, err := filepath.Glob("/proc/" + pid + "/task/*/children")
	if err != nil {
		b.Fatal(err)
	}
	var out []int
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread or the process ended
		}
		for _, f := range strings.Fields(string(data)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// waitSSHDsIdle waits, up to 30 s, until no fleet sshd has a connection
// left, so that sshdCPU counts every connection of the deployments just
// finished: a tool returns once its side is done, a moment before the
// servers' side has ended and been reaped.
func waitSSHDsIdle(b *testing.B) {
	b.Helper()
	for range 300 {
		busy := 0
		for _, pid := range fleetSSHDs(b) {
			busy += len(childrenOf(b, strconv.Itoa(pid)))
		}
		if busy == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("the fleet's sshd still have connections 30 s after the deployments ended")
}

// machineCPU is the CPU time, in seconds, every process of the machine
// has used since boot (/proc/stat): what a tool costs the servers and
// itself together, when they share the machine. Other work on the
// machine counts too.
func machineCPU(b *testing.B) float64 {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		ticks += v
	}
	return float64(ticks) / clockTicks
}

// stepDurations lists the mean duration of each step that succeeded, from
// the control plane's step histogram.
func stepDurations(b *testing.B, sys *outpostSystem) string {
	b.Helper()
	resp, err := http.Get("http://" + sys.metricsAddr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	sums, counts := map[string]float64{}, map[string]float64{}
	var steps []string
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, `{result="succeeded",step="`)
		if !ok {
			continue
		}
		step, value, _ := strings.Cut(rest, `"} `)
		v, _ := strconv.ParseFloat(value, 64)
		switch name {
		case "outpost_step_duration_seconds_sum":
			sums[step] = v
			steps = append(steps, step)
		case "outpost_step_duration_seconds_count":
			counts[step] = v
		}
	}
	var out []string
	for _, st := range steps {
		if counts[st] > 0 {
			out = append(out, fmt.Sprintf("%s %.3f", st, sums[st]/counts[st]))
		}
	}
	return strings.Join(out, ", ")
}

// sshdNode is one real sshd of the fleet: its home (where SFTP starts, and
// under which both tools deploy) and its two health endpoints.
type sshdNode struct {
	name string
	srv  *testsshd.Server
	home string
}

// startSSHDFleet starts n sshd servers, each on its own loopback IP, that
// accept signer. Each one's SFTP sessions start in its own home, so the
// relative deploy path of a plan lands in a different directory on each
// although they all log in as the same user; health endpoints follow the
// simulated service contract for both tools' deploy paths.
func startSSHDFleet(b *testing.B, dir string, signer ssh.Signer, n int) []sshdNode {
	b.Helper()
	nodes := make([]sshdNode, n)
	for i := range nodes {
		home := filepath.Join(dir, fmt.Sprintf("node-%03d", i+1))
		if err := os.MkdirAll(home, 0o755); err != nil {
			b.Fatal(err)
		}
		nodes[i] = sshdNode{name: fmt.Sprintf("node-%03d", i+1), home: home}
		nodes[i].srv = testsshd.Start(b, testsshd.Options{
			AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
			ExtraConfig: []string{
				"Subsystem sftp internal-sftp -d " + home,
				// The servers log in as this machine's root, whose
				// ~/.bashrc (a pyenv init, about 150 ms of CPU) bash runs
				// for every command sshd starts: a node's own home keeps
				// that cost, which would dominate both tools'
				// figures, out of the comparison.
				"SetEnv HOME=" + home,
			},
		})
	}
	for _, nd := range nodes {
		serveHealth(b, nd.srv.IP, healthPort, simfleet.HealthHandler(filepath.Join(nd.home, "outpost-app")))
		serveHealth(b, nd.srv.IP, fleet100ScriptHealthPort, simfleet.HealthHandler(filepath.Join(nd.home, "script-app")))
	}
	return nodes
}

// currentOf returns the release id that path/current points at.
func currentOf(b *testing.B, path string) string {
	b.Helper()
	target, err := os.Readlink(filepath.Join(path, "current"))
	if err != nil {
		b.Fatalf("%s: %v", path, err)
	}
	return filepath.Base(target)
}

// buildPaddedRelease is simfleet's release (the simulated service's
// start and stop scripts, HEALTHY) with payload random bytes added, so
// that the tar.gz is about that big.
func buildPaddedRelease(b *testing.B, dir string, payload int64) simfleet.Release {
	b.Helper()
	small, err := simfleet.BuildRelease(b.TempDir(), "fleet", true)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(small.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			b.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "payload.bin", Mode: 0o644, Size: payload, Typeflag: tar.TypeReg}); err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, payload); err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "release-fleet.tar.gz")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(out.Bytes())
	return simfleet.Release{Path: path, SHA256: hex.EncodeToString(sum[:]), Size: int64(out.Len()), Version: "fleet"}
}
