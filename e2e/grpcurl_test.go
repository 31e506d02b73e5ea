package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	"github.com/outposthq/outpost/cli"
	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// cookbook is the page whose sh blocks TestGrpcurlCookbook runs.
const cookbook = "../docs/grpcurl.md"

// shBlocks returns the fenced ```sh blocks of a markdown page, in order.
func shBlocks(t *testing.T, page string) []string {
	t.Helper()
	data, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?ms)^```sh\n(.*?)^```$").FindAllStringSubmatch(string(data), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// buildGrpcurl builds grpcurl from tools/grpcurl/go.mod (Go's cache makes
// later builds quick) and returns the directory holding it.
func buildGrpcurl(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-modfile=tools/grpcurl/go.mod", "-o", filepath.Join(dir, "grpcurl"),
		"github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build grpcurl: %v\n%s", err, out)
	}
	return dir
}

// writeRelease writes a gzipped tar holding VERSION, which the cookbook's
// health command looks for.
func writeRelease(t *testing.T, path, version string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	body := []byte(version + "\n")
	if err := tw.WriteHeader(&tar.Header{Name: "VERSION", Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	// Enough bytes, incompressible, for several upload chunks of 512 KiB.
	filler := make([]byte, 1_500_000)
	rand.Read(filler)
	if err := tw.WriteHeader(&tar.Header{Name: "data.txt", Mode: 0o644, Size: int64(len(filler)), ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(filler)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGrpcurlCookbook runs exactly the sh blocks of docs/grpcurl.md with
// real grpcurl against a real control plane, a real gateway and a real
// OpenSSH node: upload, create, approve (by another user), watch to
// success, abort. The page cannot rot without this test failing.
func TestGrpcurlCookbook(t *testing.T) {
	for _, tool := range []string{"jq", "bash", "split", "base64", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/deps.sh installs it)", tool, err)
		}
	}
	blocks := shBlocks(t, cookbook)
	if len(blocks) < 6 {
		t.Fatalf("%s has %d sh blocks, want the whole cookbook", cookbook, len(blocks))
	}
	grpcurlDir := buildGrpcurl(t)
	dir := t.TempDir()

	cp, client := startAdminControlPlane(t, controlplane.Config{
		Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "controlplane"), ReplicaName: "cp-grpcurl", Logger: testLogger(),
	})

	// Someone other than the requester approves: an approver credential
	// made with the CLI, as an admin would.
	approver := filepath.Join(dir, "approver.pem")
	var out bytes.Buffer
	env := &cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(k string) string {
		return map[string]string{"OUTPOST_CREDENTIAL": cp.AdminCredentialFile(), "OUTPOST_CONTROLPLANE": cp.Addr()}[k]
	}}
	if code := cli.Run(ctxT(t), []string{"user", "create", "bob", "--role", "approver", "-f", approver}, env); code != 0 {
		t.Fatalf("outpost user create: exit %d\n%s", code, out.String())
	}

	// One real OpenSSH node, its host key pinned in the inventory.
	signer, pub := testsshd.ClientKey(t)
	// Sessions get a HOME of their own: the login shell of the user the
	// test runs as sources that user's ~/.bashrc, which on a developer's
	// machine may do anything (a pyenv init that waits a minute for a lock).
	sshd := testsshd.Start(t, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{pub}, ExtraConfig: []string{"SetEnv HOME=" + t.TempDir()}})
	const dc = "dc-1"
	if err := client.Apply(ctxT(t), []*outpostv1.Node{{
		Id: e2etest.NodeID(0), Address: sshd.Addr, Datacenter: dc, User: sshd.User,
		Labels:   map[string]string{"app": "billing-api"},
		HostKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshd.HostKey)))},
	}}); err != nil {
		t.Fatal(err)
	}
	gwCred, err := client.JoinGateway(ctxT(t), "gw-1", dc)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{
		ControlPlane: cp.Addr(), Name: "gw-1", Datacenter: dc, CacheDir: filepath.Join(dir, "gateway"),
		SSH:         gateway.SSHConfig{Signers: []ssh.Signer{signer}},
		DialOptions: []grpc.DialOption{e2etest.TLSDialOption(gwCred)},
		Logger:      testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	gwCtx, stopGW := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(gwCtx) }()
	t.Cleanup(func() {
		stopGW()
		select {
		case <-gwDone:
		case <-time.After(waitLimit):
			t.Errorf("gateway did not stop within %v", waitLimit)
		}
	})

	artifact := filepath.Join(dir, "billing-api-1.4.2.tar.gz")
	writeRelease(t, artifact, "1.4.2")
	appDir := filepath.Join(t.TempDir(), "billing-api")

	script := "set -euo pipefail\n" + strings.Join(blocks, "\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"PATH="+grpcurlDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+dir,
		"OUTPOST="+cp.Addr(),
		"CRED="+cp.AdminCredentialFile(),
		"APPROVER_CRED="+approver,
		"ARTIFACT="+artifact,
		"APP_DIR="+appDir,
	)
	output, err := cmd.CombinedOutput()
	t.Logf("the cookbook's commands:\n%s", output)
	if err != nil {
		t.Fatalf("the cookbook's commands failed: %v", err)
	}

	// What the API and the node say, not only what the script printed.
	list, err := outpostv1.NewControlPlaneServiceClient(client.Conn).ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{App: "billing-api"})
	if err != nil {
		t.Fatal(err)
	}
	states := map[outpostv1.RolloutState]int{}
	for _, r := range list.GetRollouts() {
		states[r.GetState()]++
	}
	if len(list.GetRollouts()) != 2 || states[outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED] != 1 || states[outpostv1.RolloutState_ROLLOUT_STATE_ABORTED] != 1 {
		t.Errorf("rollouts after the cookbook: %v, want one SUCCEEDED and one ABORTED", states)
	}
	got, err := os.ReadFile(filepath.Join(appDir, "current", "VERSION"))
	if err != nil || strings.TrimSpace(string(got)) != "1.4.2" {
		t.Errorf("the node's current/VERSION = %q, %v; want 1.4.2", got, err)
	}
}
