package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitLimit bounds each wait of these tests: generous for a shared
// two-core machine, far below the go test timeout, so that a hang fails
// with a message saying what it waited for.
const waitLimit = 90 * time.Second

// pollEvery is how often waits look again.
const pollEvery = 50 * time.Millisecond

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// cpOptions configures the control plane replicas.
type cpOptions struct {
	replicas     int
	etcd         []string      // external etcd; nil: one replica with its embedded etcd
	leaderTTL    time.Duration // --leader-ttl; 0: the default
	gatewayGrace time.Duration // --gateway-grace; 0: the default
}

// controlPlane is one `outpost controlplane` process.
type controlPlane struct {
	name    string
	addr    string // gRPC address
	dataDir string
	*proc
}

// cluster is the control plane replicas of a test, their shared artifact
// directory, and a client of the API.
type cluster struct {
	t           *testing.T
	bin         string
	opts        cpOptions
	artifactDir string
	cps         []*controlPlane
}

var readyLineRE = regexp.MustCompile(`msg="control plane ready[^"]*" addr=(\S+)`)

// startCluster starts the replicas and waits until each serves (which is
// after a leader exists).
func startCluster(t *testing.T, opts cpOptions) *cluster {
	t.Helper()
	if opts.replicas == 0 {
		opts.replicas = 1
	}
	if opts.replicas > 1 && len(opts.etcd) == 0 {
		t.Fatal("several replicas need an external etcd")
	}
	c := &cluster{t: t, bin: bins(t).outpost, opts: opts, artifactDir: filepath.Join(t.TempDir(), "artifacts")}
	// One key-encryption key for every replica, as a secret mounted on
	// each would be: whichever replica starts first creates it.
	kekFile := filepath.Join(t.TempDir(), "ca.kek")
	for i := 1; i <= opts.replicas; i++ {
		name := fmt.Sprintf("cp-%d", i)
		dataDir := filepath.Join(t.TempDir(), name)
		args := []string{"controlplane",
			"--name", name,
			"--listen", "127.0.0.1:0",
			"--data-dir", dataDir,
			// One store for every replica, as a shared volume would be in
			// production: an artifact uploaded through one replica is
			// fetched from whichever one a gateway reaches.
			"--artifact-dir", c.artifactDir,
		}
		if len(opts.etcd) > 0 {
			// The test's etcd members serve plain text on loopback.
			args = append(args, "--etcd-endpoints", strings.Join(opts.etcd, ","), "--etcd-insecure", "--kek-file", kekFile)
		}
		if opts.leaderTTL > 0 {
			args = append(args, "--leader-ttl", opts.leaderTTL.String())
		}
		if opts.gatewayGrace > 0 {
			args = append(args, "--gateway-grace", opts.gatewayGrace.String())
		}
		c.cps = append(c.cps, &controlPlane{name: name, dataDir: dataDir, proc: startProc(t, name, 15*time.Second, c.bin, args...)})
	}
	for _, cp := range c.cps {
		line := cp.waitLog(t, readyLineRE, waitLimit)
		cp.addr = readyLineRE.FindStringSubmatch(line)[1]
	}
	return c
}

// addrs lists the replicas' addresses, comma-separated, as gateways take them.
func (c *cluster) addrs() string {
	var out []string
	for _, cp := range c.cps {
		out = append(out, cp.addr)
	}
	return strings.Join(out, ",")
}

// byName returns the replica called name.
func (c *cluster) byName(name string) *controlPlane {
	for _, cp := range c.cps {
		if cp.name == name {
			return cp
		}
	}
	c.t.Fatalf("no control plane %q", name)
	return nil
}

// admin returns the admin credential replica cp wrote on its first start.
func (cp *controlPlane) admin(t *testing.T) *pki.Credential {
	t.Helper()
	cred, err := pki.LoadCredential(filepath.Join(cp.dataDir, auth.AdminCredentialFile))
	if err != nil {
		t.Fatalf("%s: admin credential: %v", cp.name, err)
	}
	return cred
}

// client returns an API client of replica cp, logged in as admin (TLS with
// the credential the replica wrote), closed when the test ends.
func (c *cluster) client(cp *controlPlane) *e2etest.Client {
	c.t.Helper()
	conn, err := enroll.Dial(cp.addr, cp.admin(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return &e2etest.Client{
		ControlPlaneServiceClient: outpostv1.NewControlPlaneServiceClient(conn),
		ArtifactServiceClient:     outpostv1.NewArtifactServiceClient(conn),
		Conn:                      conn,
	}
}

// leaderOf returns the name and epoch of the current leader as etcd says.
func leaderOf(ctx context.Context, cli *clientv3.Client) (string, int64, error) {
	return leader.Observe(ctx, cli, store.LeaderPrefix)
}

// waitLeader waits for a leader other than not (any when not is "") and
// returns its name and epoch.
func waitLeader(t *testing.T, cli *clientv3.Client, not string) (string, int64) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		name, epoch, err := leaderOf(ctx, cli)
		cancel()
		if err == nil && name != not {
			return name, epoch
		}
		if err != nil && !errors.Is(err, leader.ErrNoLeader) {
			lastErr = err
		}
		time.Sleep(pollEvery)
	}
	t.Fatalf("no leader other than %q within %v (last error %v)", not, waitLimit, lastErr)
	return "", 0
}

// gatewayProc is one `outpost gateway` process.
type gatewayProc struct {
	name, dc string
	*proc
}

var connectedRE = regexp.MustCompile(`msg="connected to the control plane"`)

// startGateway runs `outpost gateway` for dc against every replica, with
// creds to log in to the nodes, and waits until it is connected. It joins
// with a token an admin created for it, as operators do.
func (c *cluster) startGateway(name, dc string, concurrency int, creds *sshCreds) *gatewayProc {
	c.t.Helper()
	conn, err := enroll.Dial(c.cps[0].addr, c.cps[0].admin(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	tok, err := outpostv1.NewAdminServiceClient(conn).CreateJoinToken(ctxT(c.t), &outpostv1.CreateJoinTokenRequest{Datacenter: dc, GatewayName: name})
	if err != nil {
		c.t.Fatalf("join token for %s: %v", name, err)
	}
	dir := c.t.TempDir()
	p := startProc(c.t, name, 20*time.Second, c.bin, "gateway",
		"--controlplane", c.addrs(),
		"--datacenter", dc,
		"--name", name,
		"--join-token-file", writeFile(c.t, "join-token", []byte(tok.GetToken()), 0o600),
		"--credential-file", filepath.Join(dir, "gateway.pem"),
		"--ssh-key", creds.keyFile,
		"--known-hosts", creds.knownHosts,
		"--cache-dir", filepath.Join(dir, "cache"),
		"--concurrency", fmt.Sprint(concurrency),
		"--log-level", "debug",
	)
	p.waitLog(c.t, connectedRE, waitLimit)
	return &gatewayProc{name: name, dc: dc, proc: p}
}

// upload stores rel through cl and returns its digest.
func upload(t *testing.T, cl *e2etest.Client, rel release) string {
	t.Helper()
	digest, err := cl.Upload(ctxT(t), rel.path)
	if err != nil {
		t.Fatal(err)
	}
	if digest != rel.sha256 {
		t.Fatalf("uploaded digest %s, release says %s", digest, rel.sha256)
	}
	return digest
}

// create submits a rollout of rel's digest with plan.
func create(t *testing.T, cl *e2etest.Client, plan *outpostv1.PlanSpec, digest string) *outpostv1.Rollout {
	t.Helper()
	r, err := cl.Create(ctxT(t), plan, digest)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRollout polls the rollout through cl until ok accepts it.
func waitRollout(t *testing.T, cl *e2etest.Client, id, what string, ok func(*outpostv1.Rollout) bool) *outpostv1.Rollout {
	t.Helper()
	r, err := cl.Wait(ctxT(t), id, pollEvery, ok)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return r
}

func terminal(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) }

// rolloutNodes returns the rollout's node records by node id.
func rolloutNodes(t *testing.T, cl *e2etest.Client, id string) map[string]*outpostv1.RolloutNode {
	t.Helper()
	list, err := cl.Nodes(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*outpostv1.RolloutNode{}
	for _, n := range list {
		out[n.GetNodeId()] = n
	}
	return out
}

// waitNode polls the rollout's node records until ok accepts one, and
// returns it.
func waitNode(t *testing.T, cl *e2etest.Client, id, what string, ok func(*outpostv1.RolloutNode) bool) *outpostv1.RolloutNode {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		list, err := cl.Nodes(ctxT(t), id)
		if err == nil {
			for _, n := range list {
				if ok(n) {
					return n
				}
			}
		}
		time.Sleep(pollEvery / 2)
	}
	t.Fatalf("waiting for %s in rollout %s: not within %v", what, id, waitLimit)
	return nil
}

// writeFile writes data to a new file in a test directory.
func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	return path
}
