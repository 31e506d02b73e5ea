package bench

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// profileNodes is BenchmarkProfile's default fleet size: big enough for
// the per-node costs to dominate, small enough to profile in a minute.
const profileNodes = 2000

// BenchmarkProfile is BenchmarkScale's rollout with the control plane and
// both gateways in this process, so that `go test -cpuprofile` (or
// -memprofile) sees Outpost's own work; the fleet stays in fleetd
// processes, out of the profile. Each daemon runs under a pprof label
// (daemon=controlplane, daemon=gateway), inherited by every goroutine it
// starts:
//
//	go test -run '^$' -bench 'BenchmarkProfile$' -benchtime 1x -cpuprofile /tmp/cpu.out ./bench/
//	go tool pprof -top -tagfocus daemon=gateway bench.test /tmp/cpu.out
//
// OUTPOST_BENCH_PROFILE_NODES sets the fleet size (default 2,000).
func BenchmarkProfile(b *testing.B) {
	nodes := envInt(b, "OUTPOST_BENCH_PROFILE_NODES", profileNodes)
	raiseFileLimit(b, 4*scaleConcurrency+1000)
	dir := b.TempDir()
	fleetd := buildFleetd(b, dir)
	key := newClientKey(b, dir)
	fleets := startFleets(b, fleetd, dir, nodes, key)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var cp *controlplane.Server
	var err error
	pprof.Do(ctx, pprof.Labels("daemon", "controlplane"), func(ctx context.Context) {
		cp, err = controlplane.Start(ctx, controlplane.Config{
			Listen:      "127.0.0.1:0",
			DataDir:     filepath.Join(dir, "cp-data"),
			ReplicaName: "bench-cp",
			Logger:      log,
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cp.Shutdown(sctx); err != nil {
			b.Errorf("control plane shutdown: %v", err)
		}
	})
	admin, err := pki.LoadCredential(cp.AdminCredentialFile())
	if err != nil {
		b.Fatal(err)
	}
	client, err := e2etest.Dial(cp.Addr(), admin)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	for _, dc := range scaleDCs {
		name := "gw-" + dc
		cred, err := client.JoinGateway(ctx, name, dc)
		if err != nil {
			b.Fatal(err)
		}
		var knownHosts []string
		for _, f := range fleets {
			knownHosts = append(knownHosts, f.knownHosts)
		}
		g, err := gateway.New(gateway.Config{
			ControlPlane: cp.Addr(),
			Name:         name,
			Datacenter:   dc,
			Concurrency:  scaleConcurrency,
			CacheDir:     filepath.Join(dir, "cache-"+dc),
			SSH: gateway.SSHConfig{
				User:            "deploy",
				Signers:         []ssh.Signer{key.signer},
				KnownHostsFiles: knownHosts,
			},
			DialOptions: []grpc.DialOption{e2etest.TLSDialOption(cred)},
			Logger:      log.With("gateway", name),
		})
		if err != nil {
			b.Fatal(err)
		}
		gctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go pprof.Do(gctx, pprof.Labels("daemon", "gateway"), func(ctx context.Context) { done <- g.Run(ctx) })
		b.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				b.Errorf("gateway %s: %v", name, err)
			}
		})
	}

	if err := client.Apply(ctx, inventory(fleets)); err != nil {
		b.Fatal(err)
	}
	artifact := filepath.Join(dir, "app.bin")
	payload := make([]byte, scaleArtifact)
	rand.Read(payload)
	if err := os.WriteFile(artifact, payload, 0o644); err != nil {
		b.Fatal(err)
	}
	digest, err := client.Upload(ctx, artifact)
	if err != nil {
		b.Fatal(err)
	}
	spec := scalePlan()
	sys := &outpostSystem{client: client}
	if path := os.Getenv("OUTPOST_BENCH_HEAPPROFILE"); path != "" {
		stop := peakHeapProfile(b, path)
		defer stop()
	}
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		_, elapsed := sys.deploy(ctx, b, spec, digest, nodes)
		total += elapsed
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/rollout")
}

// peakHeapProfile writes a heap profile to path each time the heap in use
// reaches a new peak, until stop: -memprofile only sees the heap at the
// end, after the rollout let go of it.
func peakHeapProfile(b *testing.B, path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var peak uint64
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse <= peak*11/10 {
				continue
			}
			peak = ms.HeapInuse
			runtime.GC() // a heap profile shows the heap as of the last GC
			f, err := os.Create(path)
			if err != nil {
				b.Error(err)
				return
			}
			if err := pprof.WriteHeapProfile(f); err != nil {
				b.Error(err)
			}
			f.Close()
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// scalePlan is the plan of BenchmarkScale and BenchmarkProfile: a 1 KiB
// file placed as it is, hooks that return at once, a TCP health check,
// every node in one batch, no failure allowed.
func scalePlan() *outpostv1.PlanSpec {
	return &outpostv1.PlanSpec{
		App:      e2etest.App,
		Artifact: &outpostv1.PlanArtifact{Path: "app.bin", Unpack: "none"},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": e2etest.App}},
		Deploy:   &outpostv1.PlanDeploy{Path: e2etest.DeployPath},
		Hooks:    &outpostv1.Hooks{Stop: "true", Start: "true"},
		Health:   &outpostv1.PlanHealth{Tcp: &outpostv1.TcpHealthCheck{Port: e2etest.HealthPort}, Timeout: "30s", Interval: "200ms"},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%", MaxFailPercent: new(int32)},
	}
}
