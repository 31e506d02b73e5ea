package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/testproxy"
)

// Shape of BenchmarkFanout (issue 7, benchmark 4).
const (
	fanoutNodes       = 1000
	fanoutArtifact    = 50 << 20
	fanoutConcurrency = 200 // per gateway
	// fanoutGoalOverhead bounds the bytes beyond 2 x the artifact, in
	// percent of them.
	fanoutGoalOverhead = 1.0
)

// BenchmarkFanout deploys a 50 MiB artifact to 1,000 in-process fleet
// nodes through 2 gateways and counts, on the control plane's side, what
// crossed to the gateways: the artifact bytes FetchArtifact sent (the
// control plane's outpost_artifact_fetch_sent_bytes_total), and every byte
// of the links (TLS, HTTP/2, gRPC, assignments and acks included), counted
// by a proxy in front of the control plane that each gateway dials. Goal:
// the artifact crosses exactly twice (once per gateway), with under 1%
// more bytes on the links.
//
// The nodes already hold the release (pre-seeded under the id the control
// plane gives it): the gateways fetch the artifact before the deployer
// looks at a node, so the fan-out is the same, but the 50 GB of SFTP
// writes a real upload to 1,000 nodes costs are left out; on one 2-core
// machine and its disk they would take most of an hour.
//
// OUTPOST_BENCH_FANOUT_NODES lowers the node count while working on it.
func BenchmarkFanout(b *testing.B) {
	nodes := envInt(b, "OUTPOST_BENCH_FANOUT_NODES", fanoutNodes)
	raiseFileLimit(b, 4*fanoutConcurrency+1000)
	dir := b.TempDir()
	bin := buildOutpost(b, dir)
	fleetd := buildFleetd(b, dir)
	key := newClientKey(b, dir)
	fleets := startFleets(b, fleetd, dir, nodes, key)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var proxies []*testproxy.Proxy
	sys := startSystem(ctx, b, dir, bin, systemConfig{
		key:         key,
		knownHosts:  []string{fleets[0].knownHosts, fleets[1].knownHosts},
		concurrency: fanoutConcurrency,
		dialCP: func(_ int, addr string) string {
			p := testproxy.Start(b, addr)
			proxies = append(proxies, p)
			return p.Addr()
		},
	})
	if err := sys.client.Apply(ctx, inventory(fleets)); err != nil {
		b.Fatal(err)
	}
	artifact := filepath.Join(dir, "app.bin")
	f, err := os.Create(artifact)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, fanoutArtifact); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	digest, err := sys.client.Upload(ctx, artifact)
	if err != nil {
		b.Fatal(err)
	}
	spec := scalePlan()
	waitGateways(ctx, b, sys.cp)

	wire := func() int64 {
		var n int64
		for _, p := range proxies {
			_, toGateway := p.Forwarded()
			n += toGateway
		}
		return n
	}
	var sentBytes, fetches float64
	var wireBytes int64
	var total time.Duration
	revision := 0
	for b.Loop() {
		b.StopTimer()
		revision++
		release := fmt.Sprintf("r%d-%s", revision, digest[:8])
		for _, fl := range fleets {
			for _, h := range fl.hosts {
				seedRelease(b, h, release, artifact, digest)
			}
		}
		m0, w0 := sys.metrics(b), wire()
		b.StartTimer()
		r, elapsed := sys.deploy(ctx, b, spec, digest, nodes)
		total += elapsed
		b.StopTimer()
		if r.GetReleaseId() != release {
			b.Fatalf("rollout %s deployed release %s; the benchmark seeded %s", r.GetId(), r.GetReleaseId(), release)
		}
		m1, w1 := sys.metrics(b), wire()
		sentBytes += m1["outpost_artifact_fetch_sent_bytes_total"] - m0["outpost_artifact_fetch_sent_bytes_total"]
		fetches += m1["outpost_artifact_fetches_total"] - m0["outpost_artifact_fetches_total"]
		wireBytes += w1 - w0
		b.StartTimer()
	}
	n := float64(b.N)
	crossings := sentBytes / n / fanoutArtifact
	overhead := (float64(wireBytes)/n - 2*fanoutArtifact) / (2 * fanoutArtifact) * 100
	b.ReportMetric(total.Seconds()/n, "s/rollout")
	b.ReportMetric(fetches/n, "fetches/rollout")
	b.ReportMetric(crossings, "artifact-crossings")
	b.ReportMetric(float64(wireBytes)/n/(1<<20), "wire-MiB")
	b.ReportMetric(overhead, "wire-overhead-%")
	if crossings != 2 || overhead >= fanoutGoalOverhead {
		b.Logf("GOAL MISSED: the artifact crossed %.3f times (goal 2), links carried %.2f%% more than 2 x %d MiB (goal < %.0f%%)",
			crossings, overhead, fanoutArtifact>>20, fanoutGoalOverhead)
	}
}

// seedRelease puts release on host as the deployer leaves a deployed
// single-file release: releases/<id>/<file> and its digest file. The file
// is a hard link to artifact: 1,000 copies of 50 MiB would not fit.
func seedRelease(b *testing.B, h fleetHost, release, artifact, digest string) {
	b.Helper()
	rel := filepath.Join(h.Root, e2etest.DeployPath, "releases", release)
	if err := os.MkdirAll(rel, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Link(artifact, filepath.Join(rel, filepath.Base(artifact))); err != nil && !os.IsExist(err) {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, ".outpost-sha256"), []byte(digest+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
}
