package deployer

import (
	"context"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// BenchmarkDeployLifecycle measures one node's whole deployment of a ~1 KiB
// release against a real sshd: connect, lock, precheck, upload, verify,
// unpack, four instant hooks, switch, HTTP health, prune, history, unlock.
// Each iteration deploys a new release to the same node, as consecutive
// deployments do. ms/node is the figure to compare with a hand-written
// script (bench/); cmds/node counts remote commands.
func BenchmarkDeployLifecycle(b *testing.B) {
	signer, pub := testsshd.ClientKey(b)
	srv := testsshd.Start(b, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{pub}})
	path := b.TempDir() + "/app"
	port := serveHealth(b, srv.IP, simfleet.HealthHandler(path))
	var cmds int64
	d, err := New(Config{Dial: func(ctx context.Context, n *outpostv1.Node) (Remote, error) {
		c, err := sshexec.Dial(ctx, sshexec.Config{
			Address:  n.GetAddress(),
			User:     n.GetUser(),
			Auth:     sshexec.Auth{Signers: []ssh.Signer{signer}},
			HostKeys: sshexec.HostKeys{Pinned: []ssh.PublicKey{srv.HostKey}},
		})
		if err != nil {
			return nil, err
		}
		return &benchRemote{Remote: c, cmds: &cmds}, nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	rel := serviceRelease(b, b.TempDir(), "bench", true, 700)
	if rel.Size < 900 || rel.Size > 1200 {
		b.Fatalf("artifact is %d bytes, want about 1 KiB", rel.Size)
	}
	node := &outpostv1.Node{Id: "bench-1", Address: srv.Addr, User: srv.User}
	spec := Spec{
		Path:         path,
		KeepReleases: 3,
		Hooks:        Hooks{BeforeInstall: "true", Stop: "sh bin/stop", AfterInstall: "true", Start: "sh bin/start"},
		Health: Health{
			HTTP:     &HTTPCheck{Port: port, Path: "/health"},
			Timeout:  5 * time.Second,
			Interval: 100 * time.Millisecond,
		},
	}
	i := 0
	for b.Loop() {
		i++
		job := Job{
			Node: node,
			Release: &outpostv1.Release{Id: "r" + itoa(i), App: "bench", Artifact: &outpostv1.Artifact{
				Sha256: rel.SHA256, Size: rel.Size, Name: "bench.tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
			}},
			ArtifactPath: rel.Path,
			Spec:         spec,
			RolloutID:    "bench",
			Owner:        "bench",
		}
		if res := d.Deploy(context.Background(), job, nil); res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			b.Fatalf("deploy %d: %v at %v: %v", i, res.State, res.Step, res.Err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(i), "ms/node")
	b.ReportMetric(float64(cmds)/float64(i), "cmds/node")
}

// benchRemote counts remote commands and uploads.
type benchRemote struct {
	Remote
	cmds *int64
}

func (r *benchRemote) Run(ctx context.Context, cmd string) (sshexec.Result, error) {
	*r.cmds++
	return r.Remote.Run(ctx, cmd)
}
