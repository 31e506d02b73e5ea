package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestShortLivedSSHCertificateDeployment deploys through a real gateway
// holding only an SSH user CA to a real OpenSSH sshd that trusts the CA
// (TrustedUserCAKeys) and has no authorized_keys at all: the deployment
// succeeds, sshd's log line for the login names the rollout, node,
// assignment and gateway through the certificate's key id, and the
// gateway logs the certificate it used, with no key in it.
func TestShortLivedSSHCertificateDeployment(t *testing.T) {
	logs, opt := capture(slog.LevelInfo)
	// One simulated host in a datacenter no gateway serves, outside the
	// plan's selector: the real sshd below is the node deployed.
	s := newSystem(t, 1, func(int) string { return "dc-unserved" }, opt)

	ca, caFile := testsshd.ClientKeyFile(t)
	srv := testsshd.Start(t, testsshd.Options{
		TrustedUserCA: ca.PublicKey(),
		// Certificates are the only way in; VERBOSE also logs the key id
		// of a refused certificate.
		ExtraConfig: []string{"AuthorizedKeysFile none", "LogLevel VERBOSE",
			// Sessions start no login files of this machine's user (a
			// slow .bashrc would time every command).
			"SetEnv HOME=" + t.TempDir()},
	})
	const app = "certapp"
	node := &outpostv1.Node{
		Id:         "srv-cert-1",
		Address:    srv.Addr,
		Datacenter: dcA,
		User:       srv.User,
		Labels:     map[string]string{"app": app},
		HostKeys:   []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.HostKey)))},
	}
	if err := s.client.Apply(ctxT(t), []*outpostv1.Node{node}); err != nil {
		t.Fatal(err)
	}
	cred, err := s.client.JoinGateway(ctxT(t), "gw-a", dcA)
	if err != nil {
		t.Fatal(err)
	}
	s.runGateway("gw-a", dcA, gateway.Config{
		SSH:         gateway.SSHConfig{CAKeyFile: caFile},
		DialOptions: []grpc.DialOption{e2etest.TLSDialOption(cred)},
	})

	artifact := writeTarGz(t, "cert-app-1.tar.gz", map[string]string{"VERSION": "1\n"})
	digest, err := s.client.Upload(ctxT(t), artifact)
	if err != nil {
		t.Fatal(err)
	}
	// A real shell on this machine: the deploy path is the test's own.
	deployPath := filepath.Join(t.TempDir(), "certapp")
	r := s.create(&outpostv1.PlanSpec{
		App:      app,
		Artifact: &outpostv1.PlanArtifact{Path: filepath.Base(artifact)},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": app}},
		Deploy:   &outpostv1.PlanDeploy{Path: deployPath},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%"},
	}, digest)
	// Not s.waitDone: on failure the gateway's and sshd's logs say why.
	done, err := s.client.Wait(ctxT(t), r.GetId(), pollEvery, func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) })
	if err != nil {
		t.Fatalf("waiting for rollout %s: %v\ngateway log:\n%s\nsshd log:\n%s", r.GetId(), err, tail(logs.String(), 8000), srv.Log())
	}
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout %s ended %v (%q); nodes: %v\ngateway log:\n%s\nsshd log:\n%s",
			r.GetId(), done.GetState(), done.GetMessage(), s.rolloutNodes(r.GetId()), tail(logs.String(), 8000), srv.Log())
	}
	rec := s.rolloutNodes(r.GetId())[node.GetId()]
	got, err := os.ReadFile(filepath.Join(deployPath, "current", "VERSION"))
	if err != nil || string(got) != "1\n" {
		t.Errorf("%s/current/VERSION = %q, %v; want the release", deployPath, got, err)
	}

	// sshd logged the login with the certificate's key id.
	keyID := fmt.Sprintf("ID outpost rollout=%s node=%s assignment=", r.GetId(), node.GetId())
	var accepted string
	for _, line := range strings.Split(srv.Log(), "\n") {
		if strings.Contains(line, "Accepted publickey for "+srv.User) && strings.Contains(line, keyID) {
			accepted = line
			break
		}
	}
	if accepted == "" || !strings.Contains(accepted, "ED25519-CERT") || !strings.Contains(accepted, " gateway=gw-a (serial ") {
		t.Fatalf("no sshd line accepting a certificate with key id %q...gateway=gw-a; sshd log:\n%s", keyID, srv.Log())
	}
	if rec.GetAssignmentId() != "" && !strings.Contains(accepted, "assignment="+rec.GetAssignmentId()+" ") {
		t.Errorf("sshd line %q does not name assignment %s", accepted, rec.GetAssignmentId())
	}

	// The gateway said which certificate it used, key id and serial as
	// sshd saw them, and nothing of the key.
	var gwLine string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `msg="ssh login with certificate"`) && strings.Contains(line, "node="+node.GetId()) {
			gwLine = line
		}
	}
	if gwLine == "" {
		t.Fatalf("the gateway logged no certificate login; its log:\n%s", tail(logs.String(), 8000))
	}
	_, serial, _ := strings.Cut(accepted, "(serial ")
	serial, _, _ = strings.Cut(serial, ")")
	for _, want := range []string{"serial=" + serial, "valid_before=", "valid_after=", "rollout=" + r.GetId()} {
		if !strings.Contains(gwLine, want) {
			t.Errorf("gateway line %q lacks %q", gwLine, want)
		}
	}
	caKey, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(caKey), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") && strings.Contains(logs.String(), line) {
			t.Errorf("the CA key is in the logs")
		}
	}
}

// writeTarGz writes a gzipped tar of files (name to content) named name in
// a temporary directory.
func writeTarGz(t *testing.T, name string, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for n, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
