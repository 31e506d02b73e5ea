package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/signature"
	"github.com/outposthq/outpost/internal/signature/cosigntest"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// sshdNode is a real OpenSSH sshd target whose files the test reads.
type sshdNode struct {
	node *outpostv1.Node
	root string // holds the deploy path, root/app
}

// startSSHDNode starts a real sshd accepting signer, labelled app=app.
func startSSHDNode(t *testing.T, id, app string, signer ssh.Signer) sshdNode {
	t.Helper()
	root := t.TempDir()
	srv := testsshd.Start(t, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		// Sessions start no login files of this machine's user (a slow
		// .bashrc would time every command).
		ExtraConfig: []string{"SetEnv HOME=" + t.TempDir()}})
	return sshdNode{root: root, node: &outpostv1.Node{
		Id: id, Address: srv.Addr, Datacenter: dc1, User: srv.User,
		Labels:   map[string]string{"app": app},
		HostKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.HostKey)))},
	}}
}

// signedPlan is a plan file for app in env deploying artifact to the
// node's root/app, with no hooks; signature is the plan's
// artifact.signature ("" for none).
func signedPlan(t *testing.T, dir, app, env, artifact, signature string, n sshdNode) string {
	t.Helper()
	sig := ""
	if signature != "" {
		sig = ", signature: " + signature
	}
	text := fmt.Sprintf("app: %s\nenvironment: %s\nartifact: {path: %s%s}\ntargets: {selector: {app: %s}}\ndeploy: {path: %s}\n",
		app, env, artifact, sig, app, filepath.Join(n.root, "app"))
	f, err := os.CreateTemp(dir, "plan-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestSignedArtifacts runs the trust chain end to end with bundles made
// by the real cosign CLI and a real sshd node. The control plane's prod
// environment requires a signature by ci-release: a missing bundle, a
// tampered artifact, a bundle of another artifact and a bundle by an
// untrusted key are each refused by `outpost rollout create`, naming the
// trusted key, and create nothing. A valid bundle (the plan's
// artifact.signature) is accepted; `rollout get` and the audit entries of
// the create and of the approval name the signer and the digest; the
// gateway, trusting ci-release itself, deploys exactly that digest.
// Then the control plane's check is bypassed (environment dev trusts no
// key): a gateway trusting another key refuses a bundle by ci-release,
// and refuses an unsigned artifact, and nothing reaches its node.
func TestSignedArtifacts(t *testing.T) {
	dir := t.TempDir()
	ciKey := cosigntest.GenerateKeyPair(t, dir)
	otherKey := cosigntest.GenerateKeyPair(t, dir)
	specOf := func(id string, k cosigntest.KeyPair) signature.KeySpec {
		return signature.KeySpec{ID: id, PublicKey: k.PublicPEM(t)}
	}
	trustOf := func(spec signature.KeySpec) *signature.Trust {
		tr, err := signature.NewTrust("keys", []signature.KeySpec{spec})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	s := newSystem(t, 1, oneDC, withCPConfig(func(c *controlplane.Config) {
		c.AllowSelfApproval = true
		c.Environments = map[string]controlplane.Environment{
			"prod": {Protected: true, RequireSignature: true, TrustedKeys: []signature.KeySpec{specOf("ci-release", ciKey)}},
			"dev":  {},
		}
	}))
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	signed := startSSHDNode(t, "sshd-signed", "signed", signer)
	guarded := startSSHDNode(t, "sshd-guarded", "guarded", signer)
	if err := s.client.Apply(ctxT(t), append(s.nodes, signed.node, guarded.node)); err != nil {
		t.Fatal(err)
	}
	startGW := func(name string, trust *signature.Trust) {
		cred, err := s.client.JoinGateway(ctxT(t), name, dc1)
		if err != nil {
			t.Fatal(err)
		}
		s.runGateway(name, dc1, gateway.Config{
			SSH:              gateway.SSHConfig{Signers: []ssh.Signer{signer}},
			DialOptions:      []grpc.DialOption{e2etest.TLSDialOption(cred)},
			TrustedKeys:      trust,
			RequireSignature: true,
		})
	}

	rel, err := simfleet.BuildRelease(dir, "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	other, err := simfleet.BuildRelease(t.TempDir(), "2.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	good := ciKey.SignBlob(t, rel.Path)
	ofOther := ciKey.SignBlob(t, other.Path)
	byOther := otherKey.SignBlob(t, rel.Path)
	data, err := os.ReadFile(rel.Path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	tampered := filepath.Join(t.TempDir(), filepath.Base(rel.Path))
	if err := os.WriteFile(tampered, data, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("refused by the control plane", func(t *testing.T) {
		for _, tc := range []struct {
			name, artifact, bundle string
			says                   string
		}{
			{"missing", rel.Path, "", "requires a signed artifact"},
			{"tampered artifact", tampered, good, "not this artifact"},
			{"bundle of another artifact", rel.Path, ofOther, "not this artifact"},
			{"untrusted key", rel.Path, byOther, "does not verify with any trusted key"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				args := []string{"rollout", "create", "-f", signedPlan(t, dir, "signed", "prod", tc.artifact, "", signed), "--controlplane", s.addr}
				if tc.bundle != "" {
					args = append(args, "--signature", tc.bundle)
				}
				code, stderr := s.runCLIStderr(t, args...)
				if code == 0 {
					t.Fatal("rollout create: exit 0, want the signature refused")
				}
				for _, w := range []string{"artifact_signature", tc.says, "trusted keys: ci-release"} {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr does not say %q", w)
					}
				}
			})
		}
		list, err := s.client.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list.GetRollouts() {
			t.Errorf("rollout %s exists (%v): a refused signature created it", r.GetId(), r.GetState())
		}
	})

	t.Run("valid signature deployed", func(t *testing.T) {
		startGW("gw-ci", trustOf(specOf("ci-release", ciKey)))
		defer s.stopGateway("gw-ci")
		// The bundle named in the plan, relative to the plan's directory.
		relBundle, err := filepath.Rel(dir, good)
		if err != nil {
			t.Fatal(err)
		}
		code, out := s.runCLI(t, "rollout", "create", "-f", signedPlan(t, dir, "signed", "prod", rel.Path, relBundle, signed), "--controlplane", s.addr)
		if code != 0 {
			t.Fatalf("rollout create: exit %d", code)
		}
		id := strings.TrimSpace(out)
		created, err := s.client.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		art := created.GetRollout().GetArtifact()
		if got := art.GetSignature().GetSigner(); got != "ci-release" {
			t.Fatalf("rollout signer = %q, want ci-release", got)
		}
		if _, out := s.runCLI(t, "rollout", "get", id, "--controlplane", s.addr); !strings.Contains(out, "Signed by:") || !strings.Contains(out, "ci-release") {
			t.Errorf("rollout get does not show the signer:\n%s", out)
		}
		if code, _ := s.runCLI(t, "rollout", "approve", id, "--controlplane", s.addr); code != 0 {
			t.Fatalf("rollout approve: exit %d", code)
		}
		done := s.waitDone(id)
		if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
			t.Fatalf("rollout ended %v: %q", done.GetState(), done.GetMessage())
		}
		// What was approved is what was deployed: the rollout's artifact
		// and signature never changed, and the node holds that digest.
		if !proto.Equal(done.GetArtifact(), art) {
			t.Errorf("the rollout's artifact changed after creation:\n%v\nwas\n%v", done.GetArtifact(), art)
		}
		b, err := os.ReadFile(filepath.Join(signed.root, "app", "releases", done.GetReleaseId(), ".outpost-sha256"))
		if err != nil {
			t.Fatalf("the node has no release %s: %v", done.GetReleaseId(), err)
		}
		if got := strings.Fields(string(b)); len(got) == 0 || got[0] != art.GetSha256() {
			t.Errorf("the node's release digest = %q, want the approved %s", b, art.GetSha256())
		}
		for _, method := range []string{outpostv1.ControlPlaneService_CreateRollout_FullMethodName, outpostv1.ControlPlaneService_ApproveRollout_FullMethodName} {
			e := auditEntryOf(t, s, method, id)
			if d := e.GetDetails(); d["signer"] != "ci-release" || d["artifact_sha256"] != art.GetSha256() {
				t.Errorf("the %s audit entry records signer %q, artifact %q; want ci-release, %s", method, d["signer"], d["artifact_sha256"], art.GetSha256())
			}
		}
	})

	t.Run("refused by the gateway", func(t *testing.T) {
		// The control plane's check is bypassed: dev trusts no key. This
		// gateway trusts only another key.
		startGW("gw-other", trustOf(specOf("ci-other", otherKey)))
		defer s.stopGateway("gw-other")
		for _, tc := range []struct {
			name, bundle, says string
		}{
			{"signed by a key the gateway does not trust", good, "does not verify with any trusted key"},
			{"unsigned", "", "requires a signed artifact"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				args := []string{"rollout", "create", "-f", signedPlan(t, dir, "guarded", "dev", rel.Path, "", guarded), "--controlplane", s.addr}
				if tc.bundle != "" {
					args = append(args, "--signature", tc.bundle)
				}
				code, out := s.runCLI(t, args...)
				if code != 0 {
					t.Fatalf("rollout create: exit %d, want the control plane to accept it", code)
				}
				done := s.waitDone(strings.TrimSpace(out))
				if done.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
					t.Fatal("rollout succeeded: the gateway deployed an artifact its keys did not sign")
				}
				nodes := s.rolloutNodes(done.GetId())
				n := nodes[guarded.node.GetId()]
				if n.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || n.GetStep() != outpostv1.Step_STEP_UPLOAD {
					t.Errorf("node %s: %v at %v, want FAILED at the upload step", n.GetNodeId(), n.GetState(), n.GetStep())
				}
				for _, w := range []string{"artifact signature refused by the gateway", "gw-other", tc.says, "trusted keys: ci-other"} {
					if !strings.Contains(n.GetError(), w) {
						t.Errorf("node error %q does not say %q", n.GetError(), w)
					}
				}
			})
		}
		// Not one byte reached the node: its deploy path was never made.
		if entries, err := os.ReadDir(guarded.root); err != nil || len(entries) != 0 {
			t.Errorf("node %s root holds %v (%v): something reached the node", guarded.node.GetId(), entries, err)
		}
	})
}

// auditEntryOf returns the audit entry of method on rollout id; it fails
// t when there is none.
func auditEntryOf(t *testing.T, s *system, method, id string) *outpostv1.AuditEntry {
	t.Helper()
	ac := outpostv1.NewAuditServiceClient(s.client.Conn)
	req := &outpostv1.ListAuditEntriesRequest{}
	for range 1000 {
		resp, err := ac.ListAuditEntries(ctxT(t), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			if e.GetAction() == method && e.GetRolloutId() == id {
				return e
			}
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	t.Fatalf("no audit entry of %s on %s", method, id)
	return nil
}
