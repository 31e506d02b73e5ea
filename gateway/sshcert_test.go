package gateway

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshca"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestDeploymentCertificates gives each deployment a certificate of its
// own, issued once at its first login, valid for SSH.CertValidity, and a
// context that ends early enough to clean up within it.
func TestDeploymentCertificates(t *testing.T) {
	_, caFile := testsshd.ClientKeyFile(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	logs := &syncBuffer{}
	g, err := New(Config{
		ControlPlane: "127.0.0.1:1", Name: "gw-1", Datacenter: "dc-1", CacheDir: t.TempDir(),
		SSH:    SSHConfig{CAKeyFile: caFile, CertValidity: 2 * time.Hour, User: "deploy"},
		Now:    func() time.Time { return now },
		Logger: slogTo(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	a1 := assignment("a-1", "srv-001", strings.Repeat("a", 64))
	a1.RolloutId = "r-9"
	a1.Node.Address = "127.0.0.1:22"
	a1.Deploy.Health = &outpostv1.HealthCheck{Timeout: durationpb.New(30 * time.Second)}
	a2 := assignment("a-2", "srv-002", strings.Repeat("a", 64))
	a2.RolloutId = "r-9"

	start := time.Now()
	ctx1, cancel1, err := g.withCertificate(context.Background(), a1)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel1()
	// 2h - 1m skew - 30s cleanup - 30s health.
	deadline, ok := ctx1.Deadline()
	if want := start.Add(2*time.Hour - 2*time.Minute); !ok || deadline.Before(want) || deadline.After(time.Now().Add(2*time.Hour-2*time.Minute)) {
		t.Errorf("deployment deadline %v (set %v), want about %v", deadline, ok, want)
	}
	ctx2, cancel2, err := g.withCertificate(context.Background(), a2)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	if n := counterValue(t, g.met.sshCertsIssued); n != 0 {
		t.Errorf("%v certificates issued before any login, want 0", n)
	}

	auth1, dc1, err := g.certAuth(ctx1, sshexec.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := g.certAuth(ctx1, sshexec.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	auth2, dc2, err := g.certAuth(ctx2, sshexec.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	if len(auth1.Signers) != 1 || auth1.Signers[0] != again.Signers[0] {
		t.Error("a reconnection of the same deployment got another certificate")
	}
	c1, c2 := dc1.cred.Cert, dc2.cred.Cert
	if bytes.Equal(c1.Key.Marshal(), c2.Key.Marshal()) || c1.Serial == c2.Serial || auth2.Signers[0] == auth1.Signers[0] {
		t.Error("two deployments share a key, serial or signer")
	}
	if want := "outpost rollout=r-9 node=srv-001 assignment=a-1 gateway=gw-1"; c1.KeyId != want {
		t.Errorf("key id %q, want %q", c1.KeyId, want)
	}
	if got, want := time.Unix(int64(c1.ValidBefore), 0).UTC(), now.Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("ValidBefore %v, want %v", got, want)
	}
	if c1.ValidPrincipals[0] != "deploy" {
		t.Errorf("principal %q, want the node's user", c1.ValidPrincipals)
	}
	if src := c1.CriticalOptions["source-address"]; !strings.Contains(src, "127.0.0.0/8") {
		t.Errorf("node on loopback: source-address %q lacks 127.0.0.0/8", src)
	}
	if n := counterValue(t, g.met.sshCertsIssued); n != 2 {
		t.Errorf("%v certificates issued, want 2 (one per deployment)", n)
	}

	// A login that used the certificate is logged once, with no key.
	if _, err := dc1.cred.Signer.Sign(nil, []byte("session")); err != nil {
		t.Fatal(err)
	}
	g.noteCertLogin(dc1, a1.GetNode())
	g.noteCertLogin(dc1, a1.GetNode())
	if n := strings.Count(logs.String(), `msg="ssh login with certificate"`); n != 1 {
		t.Errorf("%d login lines, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "key_id=\"outpost rollout=r-9 node=srv-001") || counterValue(t, g.met.sshCertLogins) != 1 {
		t.Errorf("login line or metric missing:\n%s", logs.String())
	}
	// One that did not is a warning.
	g.noteCertLogin(dc2, a2.GetNode())
	if !strings.Contains(logs.String(), "did not use the certificate") {
		t.Errorf("no warning for a login without the certificate:\n%s", logs.String())
	}

	// A health timeout that leaves no time within the validity fails the
	// assignment before it reaches the node.
	long := assignment("a-3", "srv-003", strings.Repeat("a", 64))
	long.Deploy.Health = &outpostv1.HealthCheck{Timeout: durationpb.New(2 * time.Hour)}
	if _, _, err := g.withCertificate(context.Background(), long); err == nil || !strings.Contains(err.Error(), "--ssh-cert-validity") {
		t.Errorf("withCertificate with a 2h health timeout and 2h validity = %v, want an error naming --ssh-cert-validity", err)
	}
}

// TestGatewayWithoutCA leaves deployments' contexts and credentials alone.
func TestGatewayWithoutCA(t *testing.T) {
	g, err := New(Config{
		ControlPlane: "127.0.0.1:1", Name: "gw-1", Datacenter: "dc-1", CacheDir: t.TempDir(),
		SSH: SSHConfig{Signers: []ssh.Signer{testSigner(t)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel, err := g.withCertificate(context.Background(), assignment("a-1", "srv-001", strings.Repeat("a", 64)))
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Error("a deployment without certificates got a deadline")
	}
	auth, dc, err := g.certAuth(ctx, g.auth)
	if err != nil || dc != nil || len(auth.Signers) != 1 {
		t.Errorf("certAuth without a CA = %d signers, %v, %v", len(auth.Signers), dc, err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDeploymentStopsBeforeItsCertificateExpires runs a deployment past
// its time limit: the gateway cancels it (the deployer would clean up or
// roll back) with a cause naming the certificate's expiry, in time for the
// cleanup to log in with a certificate still valid.
func TestDeploymentStopsBeforeItsCertificateExpires(t *testing.T) {
	// The shortest validity leaves this deployment 300 ms.
	oldSkew, oldMin := certSkew, minDeployTime
	certSkew, minDeployTime = sshca.MinValidity-deployer.DefaultCleanupTimeout-300*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { certSkew, minDeployTime = oldSkew, oldMin })
	_, caFile := testsshd.ClientKeyFile(t)

	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	dep.hold("slow", outpostv1.Step_STEP_UPLOAD)
	startGateway(t, cp, dep, func(c *Config) {
		c.SSH = SSHConfig{User: "deploy", CAKeyFile: caFile, CertValidity: sshca.MinValidity}
	})
	cp.assign(t, assignment("slow", "slow", digest))
	res := cp.waitResult(t, "slow")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || !strings.Contains(res.GetError(), "deployment time limit") ||
		!strings.Contains(res.GetError(), "--ssh-cert-validity 5m0s") {
		t.Errorf("result = %v, want FAILED for the deployment's time limit", res)
	}
}
