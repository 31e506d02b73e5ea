package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/outposthq/outpost/internal/testproxy"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Shape of BenchmarkDeltaWall (issue 17, benchmark 1); the OUTPOST_BENCH_
// DELTA_* variables override them.
const (
	deltaWallNodes = 20
	deltaWallMB    = 200  // artifact size, about
	deltaWallMbit  = 1000 // the gateway's link, each way
	// deltaWallEntriesPerMB: jarLike's entries average about 12.5 kB
	// deflated, so a 200 MB jar has 16,000 of them.
	deltaWallEntriesPerMB = 80
	// Deploy paths on each node, under its SFTP start directory.
	deltaWallApp   = "outpost-app" // delta and unrelated runs: current is the base
	deltaWallRsync = "rsync-app"   // the rsync baseline's copy
	deltaWallJar   = "app.jar"
)

// BenchmarkDeltaWall sends a changed jar (about 200 MB, thousands of
// individually deflated entries, 5 of them changed) to 20 real OpenSSH
// sshd nodes through one gateway (control plane and gateway as `outpost`
// processes) whose link to every node is one shared bandwidth limit: a
// testproxy in front of each node, all sharing a 1 Gbit/s Limiter each
// way, like one gateway's network port. Every node holds the previous
// version, deployed before the timing starts; every artifact is in the
// gateway's cache by then, so each timed run starts where a gateway
// stands once a new artifact has reached it.
// Each iteration times, one rollout of all nodes at once each:
//
//   - delta: the new version where the nodes' current release holds the
//     old one: only the changed bytes cross, the nodes rebuild the jar;
//   - unrelated: an artifact of random bytes of the same size, with
//     nothing in common with the nodes' current one: the gateway computes
//     the delta, finds it useless and sends the whole artifact;
//   - full: the same new version into a deploy path with no previous
//     release (no base), so the whole artifact crosses: what every
//     deployment cost before delta uploads;
//   - rsync: Debian's rsync over ssh (host keys verified against a
//     known_hosts), the old version already in place on each node, all
//     nodes at once, through the same limited link.
//
// Bytes are counted by the proxies: everything that crossed the link to
// the nodes (SSH framing, scripts and all), and back. Every run checks the
// artifact's SHA-256 on every node. Goals: delta bytes ≤ 5% of full and
// ≤ 1.2 × rsync's; delta wall time ≥ 5× shorter than full; unrelated within
// 5% of full.
func BenchmarkDeltaWall(b *testing.B) {
	if _, err := exec.LookPath("rsync"); err != nil {
		b.Skip("rsync not installed (scripts/deps.sh installs it)")
	}
	nodeCount := envInt(b, "OUTPOST_BENCH_DELTA_NODES", deltaWallNodes)
	sizeMB := envInt(b, "OUTPOST_BENCH_DELTA_MB", deltaWallMB)
	mbit := envInt(b, "OUTPOST_BENCH_DELTA_MBIT", deltaWallMbit)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := b.TempDir()

	// The jars: v1 on the nodes, v2 with 5 entries changed, and an
	// unrelated artifact of random bytes as big as v2.
	entries := sizeMB * deltaWallEntriesPerMB
	v1, v2, other := deltaWallArtifact(b, dir, "v1"), deltaWallArtifact(b, dir, "v2"), deltaWallArtifact(b, dir, "other")
	jarLike(b, v1, entries, nil)
	changed := map[int]bool{}
	for _, i := range []int{7, entries / 5, entries / 2, 4 * entries / 5, entries - 1} {
		changed[i] = true
	}
	size := jarLike(b, v2, entries, changed)
	if err := os.Rename(randomFile(b, filepath.Dir(other), size), other); err != nil {
		b.Fatal(err)
	}
	b.Logf("artifact: %d entries, %.1f MB, %d changed", entries, float64(size)/1e6, len(changed))

	key := newClientKey(b, dir)
	nodes := startDeltaWallNodes(b, dir, key.signer, nodeCount, int64(mbit)*1e6/8)
	knownHosts := filepath.Join(dir, "known_hosts")
	var kh strings.Builder
	for _, n := range nodes {
		kh.WriteString(knownhosts.Line([]string{knownhosts.Normalize(n.proxy.Addr())}, n.srv.HostKey) + "\n")
	}
	if err := os.WriteFile(knownHosts, []byte(kh.String()), 0o600); err != nil {
		b.Fatal(err)
	}

	bin := buildOutpost(b, dir)
	sys := startSystem(ctx, b, dir, bin, systemConfig{key: key, knownHosts: []string{knownHosts}, concurrency: nodeCount})
	var inv []*outpostv1.Node
	for i, n := range nodes {
		// Every node in the first datacenter: one gateway deploys them
		// all, through the proxies (the second gateway idles).
		labels := map[string]string{"app": "delta-wall"}
		if i == 0 {
			labels["cache-warmer"] = "yes"
		}
		inv = append(inv, &outpostv1.Node{Id: n.name, Address: n.proxy.Addr(), User: n.srv.User,
			Datacenter: scaleDCs[0], Labels: labels})
	}
	if err := sys.client.Apply(ctx, inv); err != nil {
		b.Fatal(err)
	}
	digests := map[string]string{}
	for _, path := range []string{v1, v2, other} {
		d, err := sys.client.Upload(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		digests[path] = d
	}
	waitGateways(ctx, b, sys.cp)

	w := &deltaWall{b: b, sys: sys, nodes: nodes}
	// Not timed: v1 on every node, and every artifact in the gateway's
	// cache, so that no timed run includes fetching its artifact from the
	// control plane (a new artifact crosses to the gateway once, whatever
	// is then sent to the nodes).
	w.deploy(ctx, deltaWallApp, digests[v1])
	w.warmCache(ctx, digests[v2], digests[other])
	var delta, unrelated, full, rsync deltaWallRun
	i := 0
	for b.Loop() {
		b.StopTimer()
		if i > 0 { // back to v1 alone under the nodes' current release
			w.removeAll(deltaWallApp)
			w.deploy(ctx, deltaWallApp, digests[v1])
		}
		i++
		delta.add(w.deploy(ctx, deltaWallApp, digests[v2]))
		// The nodes now hold v2, which has nothing in common with it either.
		unrelated.add(w.deploy(ctx, deltaWallApp, digests[other]))
		fullPath := fmt.Sprintf("full-%d", i)
		full.add(w.deploy(ctx, fullPath, digests[v2]))
		w.removeAll(fullPath)
		rsync.add(w.rsync(v1, v2, digests[v2], key.privateKey, knownHosts))
		w.removeAll(deltaWallRsync)
		b.StartTimer()
	}
	if delta.up*2 > full.up {
		b.Fatalf("the delta run sent %d bytes, the full one %d: the delta upload was not used", delta.up, full.up)
	}
	n := float64(i)
	for _, r := range []struct {
		name string
		run  deltaWallRun
	}{{"delta", delta}, {"unrelated", unrelated}, {"full", full}, {"rsync", rsync}} {
		b.ReportMetric(r.run.wall.Seconds()/n, r.name+"-s")
		b.ReportMetric(float64(r.run.up)/n/1e6, r.name+"-MB-to-nodes")
		b.ReportMetric(float64(r.run.down)/n/1e6, r.name+"-MB-from-nodes")
		b.ReportMetric(r.run.cpu/n, r.name+"-cpu-s")
	}
	b.ReportMetric(100*float64(delta.up)/float64(full.up), "delta/full-bytes-%")
	b.ReportMetric(float64(delta.up)/float64(rsync.up), "delta/rsync-bytes")
	b.ReportMetric(full.wall.Seconds()/delta.wall.Seconds(), "full/delta-time")
	b.ReportMetric(rsync.wall.Seconds()/delta.wall.Seconds(), "rsync/delta-time")
	b.ReportMetric(unrelated.wall.Seconds()/full.wall.Seconds(), "unrelated/full-time")
	b.ReportMetric(float64(size)/1e6, "artifact-MB")
	b.ReportMetric(float64(mbit), "link-Mbit/s")
}

// deltaWallArtifact is the path of artifact name, app.jar in a directory
// of its own: every version is deployed under the same file name.
func deltaWallArtifact(b *testing.B, dir, name string) string {
	b.Helper()
	d := filepath.Join(dir, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		b.Fatal(err)
	}
	return filepath.Join(d, deltaWallJar)
}

// deltaWallNode is one sshd behind its proxy.
type deltaWallNode struct {
	name  string
	home  string // where its SFTP sessions start; both tools deploy under it
	srv   *testsshd.Server
	proxy *testproxy.Proxy
}

// startDeltaWallNodes starts n sshd servers on their own loopback IPs,
// each behind a proxy on the same IP; the proxies share one limit of
// bytesPerSec each way.
func startDeltaWallNodes(b *testing.B, dir string, signer ssh.Signer, n int, bytesPerSec int64) []deltaWallNode {
	b.Helper()
	up, down := testproxy.NewLimiter(bytesPerSec), testproxy.NewLimiter(bytesPerSec)
	nodes := make([]deltaWallNode, n)
	for i := range nodes {
		nd := &nodes[i]
		nd.name = fmt.Sprintf("delta-%03d", i+1)
		nd.home = filepath.Join(dir, nd.name)
		if err := os.MkdirAll(nd.home, 0o755); err != nil {
			b.Fatal(err)
		}
		nd.srv = testsshd.Start(b, testsshd.Options{
			AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
			// Its own start directory and HOME (see startSSHDFleet).
			ExtraConfig: []string{"Subsystem sftp internal-sftp -d " + nd.home, "SetEnv HOME=" + nd.home},
		})
		nd.proxy = testproxy.StartOn(b, nd.srv.IP, nd.srv.Addr)
		nd.proxy.Limit(up, down)
	}
	return nodes
}

// deltaWallRun adds up the runs of one kind.
type deltaWallRun struct {
	wall     time.Duration
	up, down int64   // bytes through the proxies, to the nodes and back
	cpu      float64 // CPU seconds the machine spent during the run
}

func (r *deltaWallRun) add(o deltaWallRun) {
	r.wall += o.wall
	r.up += o.up
	r.down += o.down
	r.cpu += o.cpu
}

type deltaWall struct {
	b     *testing.B
	sys   *outpostSystem
	nodes []deltaWallNode
}

// forwarded sums the bytes all proxies forwarded so far.
func (w *deltaWall) forwarded() (up, down int64) {
	for _, n := range w.nodes {
		u, d := n.proxy.Forwarded()
		up += u
		down += d
	}
	return up, down
}

// deploy rolls digest out to every node at once under deployPath, checks
// the file on every node, and returns what the rollout took.
func (w *deltaWall) deploy(ctx context.Context, deployPath, digest string) deltaWallRun {
	b := w.b
	b.Helper()
	spec := &outpostv1.PlanSpec{
		App:      "delta-wall",
		Artifact: &outpostv1.PlanArtifact{Path: deltaWallJar, Unpack: "none"},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": "delta-wall"}},
		// Three releases kept: no timed run prunes one, which the full
		// run (into an empty path) would not do either.
		Deploy:   &outpostv1.PlanDeploy{Path: deployPath, KeepReleases: 3},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%", MaxFailPercent: new(int32)},
	}
	flushDisk()
	up0, down0 := w.forwarded()
	steps0 := w.stepSeconds()
	cpu0, sshd0, self0, u0 := machineCPU(b), sshdCPU(b), selfCPU(b), w.sys.usage(b, nil)
	_, wall := w.sys.deploy(ctx, b, spec, digest, len(w.nodes))
	cpu := machineCPU(b) - cpu0
	u1 := w.sys.usage(b, nil)
	b.Logf("CPU s: servers %.1f, this process (proxies) %.1f, gateways %.1f, control plane %.1f", sshdCPU(b)-sshd0, selfCPU(b)-self0, u1.gateways-u0.gateways, u1.cp-u0.cp)
	up1, down1 := w.forwarded()
	steps1 := w.stepSeconds()
	var spent []string
	for _, st := range []string{"lock", "precheck", "upload", "verify", "switch", "prune", "unlock"} {
		spent = append(spent, fmt.Sprintf("%s %.2f", st, (steps1[st]-steps0[st])/float64(len(w.nodes))))
	}
	b.Logf("%s %s…: %.1f s, %.1f MB to the nodes, machine CPU %.1f s; mean seconds per node by step: %s",
		deployPath, digest[:8], wall.Seconds(), float64(up1-up0)/1e6, cpu, strings.Join(spent, ", "))
	w.check(filepath.Join(deployPath, "current", deltaWallJar), digest)
	return deltaWallRun{wall: wall, up: up1 - up0, down: down1 - down0, cpu: cpu}
}

// warmCache has the gateway fetch each artifact into its cache, by
// deploying it to the first node only, under a path removed afterwards.
func (w *deltaWall) warmCache(ctx context.Context, digests ...string) {
	const scratch = "cache-warmer"
	for _, digest := range digests {
		spec := &outpostv1.PlanSpec{
			App:      "delta-wall",
			Artifact: &outpostv1.PlanArtifact{Path: deltaWallJar, Unpack: "none"},
			Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": "delta-wall", "cache-warmer": "yes"}},
			Deploy:   &outpostv1.PlanDeploy{Path: scratch, KeepReleases: 1},
			Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%", MaxFailPercent: new(int32)},
		}
		w.sys.deploy(ctx, w.b, spec, digest, 1)
	}
	if err := os.RemoveAll(filepath.Join(w.nodes[0].home, scratch)); err != nil {
		w.b.Fatal(err)
	}
}

// stepSeconds returns the seconds the nodes' steps took so far, by step,
// from the control plane's step histogram.
func (w *deltaWall) stepSeconds() map[string]float64 {
	w.b.Helper()
	resp, err := http.Get("http://" + w.sys.metricsAddr + "/metrics")
	if err != nil {
		w.b.Fatal(err)
	}
	defer resp.Body.Close()
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), `outpost_step_duration_seconds_sum{result="succeeded",step="`)
		if !ok {
			continue
		}
		step, value, _ := strings.Cut(rest, `"} `)
		sums[step], _ = strconv.ParseFloat(value, 64)
	}
	return sums
}

// rsync puts oldPath on every node as the rsync baseline's current copy
// (not timed), then runs rsync over ssh from newPath to every node at
// once through the proxies, and checks the result.
func (w *deltaWall) rsync(oldPath, newPath, digest, keyFile, knownHosts string) deltaWallRun {
	b := w.b
	b.Helper()
	remote := filepath.Join(deltaWallRsync, deltaWallJar)
	for _, n := range w.nodes {
		copyFile(b, oldPath, filepath.Join(n.home, remote))
	}
	flushDisk()
	up0, down0 := w.forwarded()
	cpu0, sshd0, self0 := machineCPU(b), sshdCPU(b), selfCPU(b)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(w.nodes))
	for i, n := range w.nodes {
		host, port, _ := strings.Cut(n.proxy.Addr(), ":")
		sshCmd := strings.Join([]string{"ssh", "-F", "/dev/null", "-i", keyFile, "-o", "IdentitiesOnly=yes",
			"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-p", port}, " ")
		wg.Go(func() {
			// sshd starts commands in the login user's home, not the SFTP
			// start directory: the remote path is absolute.
			out, err := exec.Command("rsync", "-e", sshCmd, newPath,
				n.srv.User+"@"+host+":"+filepath.Join(n.home, remote)).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("rsync to %s: %v\n%s", n.name, err, out)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := machineCPU(b) - cpu0
	b.Logf("rsync: %.1f s, machine CPU %.1f s; servers %.1f, this process (proxies) %.1f", wall.Seconds(), cpu, sshdCPU(b)-sshd0, selfCPU(b)-self0)
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	up1, down1 := w.forwarded()
	w.check(remote, digest)
	return deltaWallRun{wall: wall, up: up1 - up0, down: down1 - down0, cpu: cpu}
}

// flushDisk writes out what earlier runs left in the page cache: each
// run writes 20 copies of the artifact, and without it a run would pay for
// the writeback of the run before it (4 GB behind a 20% dirty ratio).
func flushDisk() { syscall.Sync() }

// check fails the benchmark unless rel, under every node's home, has the
// SHA-256 digest: the deployment really landed.
func (w *deltaWall) check(rel, digest string) {
	w.b.Helper()
	for _, n := range w.nodes {
		f, err := os.Open(filepath.Join(n.home, rel))
		if err != nil {
			w.b.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			w.b.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != digest {
			w.b.Fatalf("%s: %s has sha256 %s, want %s", n.name, rel, got, digest)
		}
	}
}

// removeAll deletes rel under every node's home (a finished run's files:
// 20 nodes × 200 MB each).
func (w *deltaWall) removeAll(rel string) {
	for _, n := range w.nodes {
		if err := os.RemoveAll(filepath.Join(n.home, rel)); err != nil {
			w.b.Fatal(err)
		}
	}
}

// copyFile copies src to dst, making dst's directory.
func copyFile(b *testing.B, src, dst string) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		b.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}
