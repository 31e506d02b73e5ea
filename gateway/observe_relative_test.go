package gateway

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestObserveRelativePathWhereSFTPStartsElsewhere deploys to a relative
// deploy path on an sshd whose SFTP sessions start in another directory
// than the login shell (internal-sftp -d, as chrooted or jailed SFTP
// setups do), then observes the node: the observation must read the
// release the deployer wrote, not report it missing.
func TestObserveRelativePathWhereSFTPStartsElsewhere(t *testing.T) {
	defer func(d time.Duration) { observeTimeout = d }(observeTimeout)
	observeTimeout = 3 * time.Minute
	signer, pub := testsshd.ClientKey(t)
	root := t.TempDir()
	srv := testsshd.Start(t, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{pub},
		ExtraConfig: []string{"Subsystem sftp internal-sftp -d " + root}})
	rel, err := simfleet.BuildRelease(t.TempDir(), "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{cfg: Config{Name: "gw", Datacenter: "dc-1", Now: time.Now}, log: slogTo(&syncBuffer{}),
		auth: sshexec.Auth{Signers: []ssh.Signer{signer}}}
	node := &outpostv1.Node{Id: "n1", Address: srv.Addr, Datacenter: "dc-1", User: srv.User,
		HostKeys: []string{string(ssh.MarshalAuthorizedKey(srv.HostKey))}}
	d, err := deployer.New(deployer.Config{Dial: func(ctx context.Context, n *outpostv1.Node) (deployer.Remote, error) {
		cfg, err := g.sshConfig(n)
		if err != nil {
			return nil, err
		}
		return sshexec.Dial(ctx, cfg)
	}})
	if err != nil {
		t.Fatal(err)
	}
	// A name of its own: the login shell's directory is the machine
	// user's real home, which the observation only reads.
	p := "outpost-observe-" + filepath.Base(root)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res := d.Deploy(ctx, deployer.Job{
		Node: node,
		Release: &outpostv1.Release{Id: "r1", App: "app", Artifact: &outpostv1.Artifact{
			Sha256: rel.SHA256, Size: rel.Size, Name: "app.tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
		}},
		ArtifactPath: rel.Path,
		Spec:         deployer.Spec{Path: p},
		RolloutID:    "ro", Owner: "gw",
	}, nil)
	if res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Fatalf("deploy: %v at %v: %v", res.State, res.Step, res.Err)
	}
	if _, err := os.Stat(filepath.Join(root, p, "releases", "r1")); err != nil {
		t.Fatalf("the deployer did not write under the SFTP start directory: %v", err)
	}

	o := g.observe(ctx, &outpostv1.ServeHostKeyScansResponse{ScanId: "s", Node: node,
		Observe: &outpostv1.ObserveRequest{Path: p, Layout: outpostv1.Layout_LAYOUT_RELEASES, Release: "r1"}}).GetObservation()
	if o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_OK || o.GetRelease() != "r1" ||
		!o.GetReleasePresent() || o.GetSha256() != rel.SHA256 || o.GetLockHeld() {
		t.Errorf("observation of the deployed node = %v, want release r1 present with its digest and no lock", o)
	}

	// A relative path that resolves to something no deploy path may be is
	// refused, not read.
	o = g.observe(ctx, &outpostv1.ServeHostKeyScansResponse{ScanId: "s", Node: node,
		Observe: &outpostv1.ObserveRequest{Path: "../../../../../../../../etc", Layout: outpostv1.Layout_LAYOUT_RELEASES, Release: "r1"}}).GetObservation()
	if o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_FAILED {
		t.Errorf("observation of ../../etc = %v, want FAILED", o)
	}
}
