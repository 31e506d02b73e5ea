package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh/knownhosts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"sigs.k8s.io/yaml"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	// nodesPerIDC is how many sshd nodes each idc segment runs.
	nodesPerIDC = 2
	// app labels every node and names the plan's application.
	app = "segmented-demo"
	// deployPath is relative: each node's SFTP home is its own root.
	deployPath  = "app"
	healthPort  = 18080
	metricsPort = "9465"
	// blockedWait is how long a probe waits for a connection that the
	// firewall should drop: plenty for a SYN/SYN-ACK between namespaces.
	blockedWait = time.Second
)

var cpAddr = net.JoinHostPort(centralIP, "7443")

// segment is one idc: its namespace, datacenter, gateway and nodes.
type segment struct {
	ns, datacenter, gateway string
	gatewayIP               string
	gatewayProc             *process
	nodes                   []*node
}

type node struct {
	id string
	*sshNode
}

// TestSegmentedNetwork deploys a release to two idc segments whose
// firewall lets connections out to central and none in: the gateways dial
// out to the control plane, get their batches and deploy over SSH inside
// their own segment. Then it shows that the control plane's namespace
// cannot open a connection to anything in either segment (an sshd, a
// health endpoint, the gateway's metrics), while the same addresses
// answer inside their segment, and that the router's firewall dropped
// central's attempts.
func TestSegmentedNetwork(t *testing.T) {
	requireNetns(t)
	removeStale(t)
	dir := t.TempDir()
	bin := buildOutpost(t, dir)
	nw := newNetwork(t, 2)

	cp := startIn(t, nw.central, "controlplane", 15*time.Second, bin, "controlplane",
		"--listen", cpAddr, "--data-dir", filepath.Join(dir, "controlplane"), "--name", "cp-central")
	if err := cp.waitListening(nw.central, cpAddr, "", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// The operator's credential, written by the control plane on its
	// first start; every call is TLS with it.
	if err := cp.waitLog("control plane ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "controlplane", "admin.pem")

	login, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	var segments []*segment
	var inventory []map[string]any
	for i, ns := range nw.idcs {
		sg := &segment{
			ns:         ns,
			datacenter: fmt.Sprintf("idc-%d", i+1),
			gatewayIP:  idcHostIP(i+1, 2),
		}
		sg.gateway = "gw-" + sg.datacenter
		// Each segment's gateway has its own key, accepted by its own
		// nodes only, and its own known_hosts: credentials stay in the
		// segment.
		signer, keyPEM := newKey(t)
		var known strings.Builder
		for h := 0; h < nodesPerIDC; h++ {
			ip := idcHostIP(i+1, 11+h)
			n := &node{id: fmt.Sprintf("srv-%d%03d", i+1, 11+h)}
			n.sshNode = startSSHNode(t, ns, n.id, ip, signer.PublicKey())
			serveHealth(t, ns, net.JoinHostPort(ip, fmt.Sprint(healthPort)), filepath.Join(n.root, deployPath))
			known.WriteString(knownhosts.Line([]string{ip}, n.hostKey) + "\n")
			sg.nodes = append(sg.nodes, n)
			inventory = append(inventory, map[string]any{
				"id": n.id, "address": ip, "datacenter": sg.datacenter, "user": login.Username,
				"labels": map[string]string{"app": app},
			})
		}
		gwDir := filepath.Join(dir, sg.gateway)
		keyFile, knownFile := filepath.Join(gwDir, "id_ed25519"), filepath.Join(gwDir, "known_hosts")
		// The gateway's join token, created by the admin in central and
		// carried to the segment as a file.
		tokenFile := filepath.Join(gwDir, "join-token")
		if err := errors.Join(
			os.MkdirAll(gwDir, 0o700),
			os.WriteFile(keyFile, keyPEM, 0o600),
			os.WriteFile(knownFile, []byte(known.String()), 0o600),
			os.WriteFile(tokenFile, []byte(joinToken(t, nw.central, bin, admin, sg.datacenter, sg.gateway)), 0o600),
		); err != nil {
			t.Fatal(err)
		}
		sg.gatewayProc = startIn(t, ns, sg.gateway, 15*time.Second, bin, "gateway",
			"--controlplane", cpAddr, "--datacenter", sg.datacenter, "--name", sg.gateway,
			"--join-token-file", tokenFile, "--credential-file", filepath.Join(gwDir, "gateway.pem"),
			"--ssh-key", keyFile, "--known-hosts", knownFile, "--cache-dir", filepath.Join(gwDir, "cache"),
			"--metrics-listen", net.JoinHostPort(sg.gatewayIP, metricsPort))
		segments = append(segments, sg)
	}
	for _, sg := range segments {
		// The gateway dialled out through the router: the only way in.
		if err := sg.gatewayProc.waitLog("connected to the control plane", 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// The operator's side: the CLI in central, as it would run next to
	// the control plane.
	release, err := simfleet.BuildRelease(dir, "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	invData, err := yaml.Marshal(map[string]any{"nodes": inventory})
	if err != nil {
		t.Fatal(err)
	}
	invFile, planFile := filepath.Join(dir, "nodes.yaml"), filepath.Join(dir, "plan.yaml")
	if err := errors.Join(
		os.WriteFile(invFile, invData, 0o644),
		os.WriteFile(planFile, []byte(planYAML(release.Path)), 0o644),
	); err != nil {
		t.Fatal(err)
	}
	out, err := outpostIn(t, nw.central, bin, 30*time.Second, "node", "apply", "--controlplane", cpAddr, "--credential", admin, "-f", invFile)
	if err != nil {
		t.Fatalf("outpost node apply: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%d nodes: %d created", 2*nodesPerIDC, 2*nodesPerIDC); !strings.Contains(out, want) {
		t.Errorf("outpost node apply printed %q, want %q", out, want)
	}

	start := time.Now()
	out, err = outpostIn(t, nw.central, bin, 60*time.Second, "rollout", "create", "--controlplane", cpAddr, "--credential", admin, "-f", planFile, "--watch")
	t.Logf("outpost rollout create --watch (%v):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("outpost rollout create --watch: %v", err)
	}
	m := regexp.MustCompile(`rollout (\S+) created: .* release (\S+),`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("outpost rollout create --watch did not say which rollout and release it created:\n%s", out)
	}
	rolloutID, releaseID := m[1], m[2]
	// Release ids are r<revision>-<first 8 hex of the artifact's SHA-256>;
	// this is the app's first revision.
	if want := "r1-" + release.SHA256[:8]; releaseID != want {
		t.Errorf("release id %q, want %q", releaseID, want)
	}

	// Every node runs the release, checked on the node's files.
	for _, sg := range segments {
		for _, n := range sg.nodes {
			checkNode(t, n, releaseID)
		}
	}
	// And each node was deployed by the gateway of its own segment.
	recs := rolloutNodes(t, nw.central, admin, rolloutID)
	for _, sg := range segments {
		for _, n := range sg.nodes {
			rec := recs[n.id]
			if rec.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || rec.GetRelease() != releaseID || rec.GetGateway() != sg.gateway {
				t.Errorf("%s in %s: %v with release %q on gateway %q (error %q), want SUCCEEDED with %q on %q",
					n.id, sg.datacenter, rec.GetState(), rec.GetRelease(), rec.GetGateway(), rec.GetError(), releaseID, sg.gateway)
			}
		}
	}

	checkSegmentation(t, nw, segments)
}

// planYAML is a rolling plan over every node of both segments, two nodes
// at a time, on the simulated service (COMMON.md).
func planYAML(artifact string) string {
	return fmt.Sprintf(`app: %s
environment: staging
artifact: {path: %q, unpack: tar}
targets:
  selector: {app: %s}
  datacenters: [idc-1, idc-2]
deploy: {path: %s}
hooks: {stop: sh bin/stop, start: sh bin/start}
health:
  http: {port: %d, path: /health, expect_status: 200}
  timeout: 10s
  interval: 200ms
strategy: {type: rolling, batch: 2}
`, app, artifact, app, deployPath, healthPort)
}

// joinToken creates, with the outpost CLI in central as the admin, a join
// token for gateway name of datacenter dc.
func joinToken(t *testing.T, central, bin, admin, dc, name string) string {
	t.Helper()
	out, err := outpostIn(t, central, bin, 30*time.Second, "token", "create", "--controlplane", cpAddr, "--credential", admin,
		"--datacenter", dc, "--gateway-name", name)
	if err != nil {
		t.Fatalf("outpost token create: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, pki.JoinTokenPrefix) {
			return line
		}
	}
	t.Fatalf("outpost token create printed no token:\n%s", out)
	return ""
}

// outpostIn runs the outpost CLI in namespace ns and returns its output.
func outpostIn(t *testing.T, ns, bin string, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sbin("ip"), append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("no result within %v: %w", timeout, err)
	}
	return string(out), err
}

// serveHealth serves the simulated service's health endpoint for
// deployPath on addr inside namespace ns, where the gateway's health
// check reaches it, until the test ends.
func serveHealth(t *testing.T, ns, addr, deployPath string) {
	t.Helper()
	l, err := listenIn(ns, addr)
	if err != nil {
		t.Fatalf("health endpoint: %v", err)
	}
	srv := &http.Server{Handler: simfleet.HealthHandler(deployPath), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})
}

// checkNode checks that n's current release is releaseID and that the
// simulated service runs it.
func checkNode(t *testing.T, n *node, releaseID string) {
	t.Helper()
	base := filepath.Join(n.root, deployPath)
	if got, err := os.Readlink(filepath.Join(base, "current")); err != nil || got != "releases/"+releaseID {
		t.Errorf("%s: current -> %q (%v), want releases/%s", n.id, got, err, releaseID)
	}
	want, err := filepath.EvalSymlinks(filepath.Join(base, "releases", releaseID))
	if err != nil {
		t.Errorf("%s: release directory: %v", n.id, err)
		return
	}
	running, err := os.ReadFile(filepath.Join(base, ".svc", "running"))
	if got := strings.TrimSpace(string(running)); err != nil || got != want {
		t.Errorf("%s: the service runs %q (%v), want %s", n.id, got, err, want)
	}
}

// rolloutNodes reads a rollout's node records through the API, from
// central (the test's own client dials from inside that namespace).
func rolloutNodes(t *testing.T, central, adminFile, rolloutID string) map[string]*outpostv1.RolloutNode {
	t.Helper()
	admin, err := pki.LoadCredential(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+cpAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLSConfig(admin, ""))),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialIn(ctx, central, addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewControlPlaneServiceClient(conn).ListRolloutNodes(ctx,
		&outpostv1.ListRolloutNodesRequest{RolloutId: rolloutID, PageSize: 100})
	if err != nil {
		t.Fatalf("list rollout nodes: %v", err)
	}
	recs := map[string]*outpostv1.RolloutNode{}
	for _, r := range resp.GetNodes() {
		recs[r.GetNodeId()] = r
	}
	return recs
}

// probe is one connection attempt across the network.
type probe struct {
	from, fromNS string // who tries, and from which namespace
	to, addr     string
	open         bool // whether the connection should succeed
}

// checkSegmentation tries connections across the network, all at once:
// central into every listener of every segment (blocked), a segment into
// the other (blocked), and, to show those listeners are up and the
// probes can succeed, each segment into its own listeners and out to the
// control plane. Central's attempts must show up in the firewall's drop
// counter.
func checkSegmentation(t *testing.T, nw *network, segments []*segment) {
	t.Helper()
	var probes []probe
	for i, sg := range segments {
		targets := [][2]string{{"gateway " + sg.gateway + " metrics", net.JoinHostPort(sg.gatewayIP, metricsPort)}}
		for _, n := range sg.nodes {
			targets = append(targets,
				[2]string{"sshd of " + n.id, net.JoinHostPort(n.ip, "22")},
				[2]string{"health endpoint of " + n.id, net.JoinHostPort(n.ip, fmt.Sprint(healthPort))})
		}
		for _, tg := range targets {
			probes = append(probes,
				probe{from: "central (control plane)", fromNS: nw.central, to: tg[0], addr: tg[1], open: false},
				probe{from: sg.datacenter, fromNS: sg.ns, to: tg[0], addr: tg[1], open: true},
			)
		}
		other := segments[(i+1)%len(segments)]
		probes = append(probes,
			probe{from: other.datacenter, fromNS: other.ns, to: "sshd of " + sg.nodes[0].id, addr: net.JoinHostPort(sg.nodes[0].ip, "22"), open: false},
			probe{from: sg.datacenter, fromNS: sg.ns, to: "the control plane", addr: cpAddr, open: true},
		)
	}
	before, err := nw.droppedFromCentral()
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), blockedWait)
			defer cancel()
			c, err := dialIn(ctx, p.fromNS, p.addr)
			if err == nil {
				c.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	fromCentral := 0
	for i, p := range probes {
		switch err := errs[i]; {
		case p.open && err != nil:
			t.Errorf("%s -> %s (%s): %v, want a connection", p.from, p.to, p.addr, err)
		case !p.open && err == nil:
			t.Errorf("%s -> %s (%s): connected, want the segment closed to it", p.from, p.to, p.addr)
		case !p.open:
			t.Logf("%s -> %s (%s): blocked: %v", p.from, p.to, p.addr, err)
		}
		if p.fromNS == nw.central {
			fromCentral++
		}
	}
	after, err := nw.droppedFromCentral()
	if err != nil {
		t.Fatal(err)
	}
	if got := after - before; got < int64(fromCentral) {
		t.Errorf("the router's firewall dropped %d packets from central during %d connection attempts into the segments, want at least one per attempt", got, fromCentral)
	}
}
