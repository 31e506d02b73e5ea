package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const healthPort = 18080

// BenchmarkLifecycle measures one node's whole deployment (lock, precheck,
// upload, verify, unpack, stop, switch, start, HTTP health, prune, history,
// unlock) of a ~1 KiB release with instant hooks, done by Outpost's deployer
// and by a hand-written script running each step as its own ssh command over
// one OpenSSH ControlMaster connection. Each iteration is a new release on
// the same node, as consecutive deployments are; ms/node is the figure.
func BenchmarkLifecycle(b *testing.B) {
	t := startTarget(b)
	rel, err := simfleet.BuildRelease(b.TempDir(), "bench", true)
	if err != nil {
		b.Fatal(err)
	}
	if rel.Size > 4<<10 {
		b.Fatalf("release is %d bytes, want about 1 KiB", rel.Size)
	}

	b.Run("tool=outpost", func(b *testing.B) {
		path := filepath.Join(t.srv.Dir, "outpost-app")
		serveHealth(b, t.srv.IP, healthPort, simfleet.HealthHandler(path))
		d, err := deployer.New(deployer.Config{
			Dial: func(ctx context.Context, n *outpostv1.Node) (deployer.Remote, error) {
				return sshexec.Dial(ctx, sshexec.Config{
					Address:  n.GetAddress(),
					User:     n.GetUser(),
					Auth:     sshexec.Auth{Signers: []ssh.Signer{t.signer}},
					HostKeys: sshexec.HostKeys{KnownHostsFiles: []string{t.knownHosts}},
				})
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(d.Close)
		node := &outpostv1.Node{Id: "bench-1", Address: t.srv.Addr, User: t.srv.User}
		spec := deployer.Spec{
			Path:         path,
			KeepReleases: 5,
			Hooks:        deployer.Hooks{Stop: "sh bin/stop", Start: "sh bin/start", BeforeInstall: "true", AfterInstall: "true"},
			Health: deployer.Health{
				HTTP:     &deployer.HTTPCheck{Port: healthPort, Path: "/health", ExpectStatus: 200},
				Timeout:  5 * time.Second,
				Interval: 200 * time.Millisecond,
			},
		}
		i := 0
		for b.Loop() {
			i++
			job := deployer.Job{
				Node: node,
				Release: &outpostv1.Release{Id: fmt.Sprintf("r%d", i), App: "bench", Artifact: &outpostv1.Artifact{
					Sha256: rel.SHA256, Size: rel.Size, Name: "bench.tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
				}},
				ArtifactPath: rel.Path,
				Spec:         spec,
				RolloutID:    "bench",
				Owner:        "bench",
			}
			res := d.Deploy(context.Background(), job, func(*outpostv1.NodeStepEvent) {})
			if res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
				b.Fatalf("deploy %d: %v at %v: %v", i, res.State, res.Step, res.Err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/node")
	})

	b.Run("tool=controlmaster-script", func(b *testing.B) {
		path := filepath.Join(t.srv.Dir, "script-app")
		// A second health endpoint for the script's deploy path, on another
		// port of the same host.
		serveHealth(b, t.srv.IP, healthPort+1, simfleet.HealthHandler(path))
		health := fmt.Sprintf("http://%s:%d/health", t.srv.IP, healthPort+1)
		i := 0
		for b.Loop() {
			i++
			cmd := exec.Command("bash", "testdata/controlmaster-deploy.sh",
				t.optsFile, t.login(), t.port(), path, fmt.Sprintf("r%d", i), rel.Path, rel.SHA256, health)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("script deploy %d: %v\n%s", i, err, out)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/node")
	})
}
