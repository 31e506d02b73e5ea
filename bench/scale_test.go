package bench

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Shape and goals of BenchmarkScale (issue 7, benchmarks 3 and 5).
const (
	scaleNodes       = 10_000
	scaleConcurrency = 200 // per gateway
	scaleArtifact    = 1 << 10
	scaleGoalSeconds = 120
	scaleGoalCPMB    = 500
	scaleGoalGWMB    = 1000
	// scaleGoalWrites bounds etcd write requests (transactions, counted
	// by etcd as committed proposals) per node, on average.
	scaleGoalWrites = 3
)

// BenchmarkScale deploys a 1 KiB artifact (unpack none, hooks `true`, a
// TCP health check) to 10,000 in-process SSH fleet nodes in 2 datacenters
// in one batch, through 2 gateways deploying 200 nodes at once each. The
// control plane and the gateways are `outpost` processes; the fleet is
// two fleetd processes (5,000 hosts each: a host holds two listeners and a
// process may hold 20,000 descriptors here) whose hosts run the
// deployer's scripts in their in-process shell (simfleet.ShellInterp).
//
// Figures per rollout: wall time from CreateRollout to SUCCEEDED; the
// peak RSS (VmHWM) of the control plane (with its embedded etcd) and of
// each gateway; the keys written to etcd per node, counted by etcd itself
// (etcd_mvcc_put_total), and its write requests (raft proposals); the CPU
// seconds per 1,000 nodes of the control plane, of the gateways and of the
// simulated fleet (its SSH servers and the scripts they run, which real
// nodes would run on their own CPUs; fleet-cmds is the part in child
// processes, the programs the in-process shell does not do itself).
//
// OUTPOST_BENCH_SCALE_NODES lowers the node count while working on it.
func BenchmarkScale(b *testing.B) {
	nodes := envInt(b, "OUTPOST_BENCH_SCALE_NODES", scaleNodes)
	raiseFileLimit(b, 4*scaleConcurrency+1000)
	dir := b.TempDir()
	bin := buildOutpost(b, dir)
	fleetd := buildFleetd(b, dir)
	key := newClientKey(b, dir)

	fleetStart := time.Now()
	fleets := startFleets(b, fleetd, dir, nodes, key)
	b.Logf("fleet of %d hosts started in %v", nodes, time.Since(fleetStart).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	sys := startSystem(ctx, b, dir, bin, systemConfig{
		key:         key,
		knownHosts:  []string{fleets[0].knownHosts, fleets[1].knownHosts},
		concurrency: scaleConcurrency,
	})
	if err := sys.client.Apply(ctx, inventory(fleets)); err != nil {
		b.Fatal(err)
	}
	artifact := filepath.Join(dir, "app.bin")
	payload := make([]byte, scaleArtifact)
	rand.Read(payload)
	if err := os.WriteFile(artifact, payload, 0o644); err != nil {
		b.Fatal(err)
	}
	digest, err := sys.client.Upload(ctx, artifact)
	if err != nil {
		b.Fatal(err)
	}
	spec := scalePlan()
	waitGateways(ctx, b, sys.cp)

	var total time.Duration
	var execs int64
	history := sys.etcdHistory(b)
	rev0 := history.revision(ctx, b)
	before := sys.usage(b, fleets)
	execs0 := fleetExecs(b, fleets)
	cpRSS := sampleRSS(sys.cp.Pid())
	b.ResetTimer()
	for range b.N {
		r, elapsed := sys.deploy(ctx, b, spec, digest, nodes)
		total += elapsed
		b.StopTimer()
		for _, f := range fleets {
			for _, h := range f.hosts {
				if cur, err := h.currentRelease(); err != nil || cur != r.GetReleaseId() {
					b.Fatalf("%s: current -> %q (%v), want %s", h.Name, cur, err, r.GetReleaseId())
				}
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	// Peaks first: replaying etcd's history below costs the control
	// plane memory of its own.
	cpMB := sys.cp.peakMB(b)
	gwMB := 0.0
	for _, g := range sys.gateways {
		gwMB = max(gwMB, g.peakMB(b))
	}
	anonMB, fileMB := cpRSS.Stop()
	after := sys.usage(b, fleets)
	kinds := history.putsByKind(ctx, b, rev0, history.revision(ctx, b))
	execs = fleetExecs(b, fleets) - execs0

	perRollout := float64(b.N)
	deployed := float64(nodes) * perRollout
	secs := total.Seconds() / perRollout
	b.ReportMetric(secs, "s/rollout")
	b.ReportMetric(float64(nodes)/secs, "nodes/s")
	b.ReportMetric(cpMB, "cp-peak-MB")
	b.Logf("control plane RssAnon peaked at %v; every 5 s: %s", cpRSS.anonAt.Round(time.Second), strings.Join(cpRSS.log, " "))
	b.ReportMetric(anonMB, "cp-peak-anon-MB")
	b.ReportMetric(fileMB, "cp-peak-file-MB")
	b.ReportMetric(gwMB, "gateway-peak-MB")
	puts := (after.etcd.puts - before.etcd.puts) / deployed
	writes := (after.etcd.proposals - before.etcd.proposals) / deployed
	b.ReportMetric(puts, "etcd-puts/node")
	b.ReportMetric(writes, "etcd-txns/node")
	for kind, n := range kinds {
		b.ReportMetric(float64(n)/deployed, "etcd-puts-"+kind+"/node")
	}
	b.ReportMetric((after.cp-before.cp)/deployed*1000, "cp-cpu-s/1k-nodes")
	b.ReportMetric((after.gateways-before.gateways)/deployed*1000, "gw-cpu-s/1k-nodes")
	b.ReportMetric((after.fleet-before.fleet)/deployed*1000, "fleet-cpu-s/1k-nodes")
	b.ReportMetric((after.fleetCmds-before.fleetCmds)/deployed*1000, "fleet-cmds-cpu-s/1k-nodes")
	b.ReportMetric(float64(execs)/deployed, "execs/node")
	fleetMB := 0.0
	for _, f := range fleets {
		fleetMB = max(fleetMB, f.peakMB(b))
	}
	b.ReportMetric(fleetMB, "fleet-peak-MB")
	if nodes == scaleNodes && (secs > scaleGoalSeconds || cpMB > scaleGoalCPMB || gwMB > scaleGoalGWMB || writes > scaleGoalWrites) {
		b.Logf("GOAL MISSED: %.1f s per rollout (goal < %d s), control plane %.0f MB (goal < %d), gateways %.0f MB (goal < %d), %.2f etcd write requests per node (goal <= %d; %.1f keys written)",
			secs, scaleGoalSeconds, cpMB, scaleGoalCPMB, gwMB, scaleGoalGWMB, writes, scaleGoalWrites, puts)
	}
}

// fleetExecs is how many commands the fleets ran so far.
func fleetExecs(b *testing.B, fleets []*fleetProc) int64 {
	var n int64
	for _, f := range fleets {
		n += f.stats(b).Execs
	}
	return n
}
