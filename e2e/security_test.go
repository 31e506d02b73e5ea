package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// logBuffer collects the logs of the daemons of a test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// capture logs everything from level up into a buffer (and warnings to
// stderr as usual).
func capture(level slog.Level) (*logBuffer, systemOption) {
	buf := &logBuffer{}
	return buf, func(s *system) {
		s.log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level}))
	}
}

func withCPConfig(f func(*controlplane.Config)) systemOption {
	return func(s *system) { s.cpConfig = f }
}

// runGateway runs a gateway built from cfg (ControlPlane, Name,
// Datacenter, cache, logger and backoff filled in) until the end of the
// test, like startGateway; the caller supplies credentials and SSH.
func (s *system) runGateway(name, dc string, cfg gateway.Config) {
	s.t.Helper()
	cfg.ControlPlane, cfg.Name = s.addr, name
	if cfg.Datacenter == "" && cfg.CredentialFile == "" {
		cfg.Datacenter = dc
	}
	cfg.CacheDir = filepath.Join(s.dir, "gateways", name)
	cfg.Logger = s.log.With("component", "gateway", "gateway", name)
	cfg.TracerProvider = s.tp
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 300*time.Millisecond
	g, err := gateway.New(cfg)
	if err != nil {
		s.t.Fatalf("gateway.New(%s): %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rg := &runningGateway{name: name, dc: dc, cancel: cancel, done: make(chan error, 1)}
	go func() { rg.done <- g.Run(ctx) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gateways[name] = rg
}

var acceptedRE = regexp.MustCompile(`msg="assignment accepted".* gateway=(\S+) .*node_id=(\S+)`)

// TestGatewaysGetOnlyTheirOwnDatacenter deploys to two datacenters, each
// with its joined gateway, while a third gateway, joined for dc-a, claims
// dc-b: every assignment and every node record goes to the gateway of the
// node's datacenter, and the impostor gets nothing.
func TestGatewaysGetOnlyTheirOwnDatacenter(t *testing.T) {
	const hosts = 6
	logs, opt := capture(slog.LevelInfo)
	s := newSystem(t, hosts, alternateDC, opt)
	s.twoGateways()
	rogue, err := s.client.JoinGateway(ctxT(t), "gw-rogue", dcA)
	if err != nil {
		t.Fatal(err)
	}
	s.runGateway("gw-rogue", dcB, gateway.Config{
		Datacenter:  dcB,
		SSH:         gateway.SSHConfig{Signers: []ssh.Signer{s.fleet.Signer}, KnownHostsFiles: []string{s.fleet.KnownHosts}},
		DialOptions: []grpc.DialOption{e2etest.TLSDialOption(rogue)},
	})
	release := s.deploy("v1", "50%")

	dcOf := map[string]string{}
	for _, n := range s.nodes {
		dcOf[n.GetId()] = n.GetDatacenter()
	}
	gatewayOf := map[string]string{dcA: "gw-a", dcB: "gw-b"}
	var rolloutID string
	for _, n := range s.rolloutNodesOfRelease(release) {
		rolloutID = n.GetRolloutId()
		if want := gatewayOf[dcOf[n.GetNodeId()]]; n.GetGateway() != want || n.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			t.Errorf("node %s of %s: %v on gateway %q, want SUCCEEDED on %s", n.GetNodeId(), dcOf[n.GetNodeId()], n.GetState(), n.GetGateway(), want)
		}
	}
	if rolloutID == "" {
		t.Fatal("no node records")
	}
	accepted := acceptedRE.FindAllStringSubmatch(logs.String(), -1)
	if len(accepted) < hosts {
		t.Errorf("%d assignments accepted, want at least %d", len(accepted), hosts)
	}
	for _, m := range accepted {
		if gw, node := m[1], m[2]; gw != gatewayOf[dcOf[node]] {
			t.Errorf("gateway %s accepted node %s of %s", gw, node, dcOf[node])
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `msg="assignment refused"`) {
			t.Errorf("an assignment was refused (sent to the wrong gateway?): %s", line)
		}
	}
	if !strings.Contains(logs.String(), `bound to datacenter \"dc-a\", not \"dc-b\"`) {
		t.Errorf("the control plane did not refuse gw-rogue's hello for dc-b; logs:\n%s", tail(logs.String(), 4000))
	}
}

// rolloutNodesOfRelease returns the node records of the rollout that
// deployed release.
func (s *system) rolloutNodesOfRelease(release string) []*outpostv1.RolloutNode {
	s.t.Helper()
	resp, err := s.client.ListRollouts(ctxT(s.t), &outpostv1.ListRolloutsRequest{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, r := range resp.GetRollouts() {
		if r.GetReleaseId() == release {
			nodes, err := s.client.Nodes(ctxT(s.t), r.GetId())
			if err != nil {
				s.t.Fatal(err)
			}
			return nodes
		}
	}
	s.t.Fatalf("no rollout of release %s", release)
	return nil
}

// auditLog returns every audit entry, as JSON.
func (s *system) auditLog() string {
	s.t.Helper()
	var b strings.Builder
	req := &outpostv1.ListAuditEntriesRequest{}
	ac := outpostv1.NewAuditServiceClient(s.client.Conn)
	for range 1000 {
		resp, err := ac.ListAuditEntries(ctxT(s.t), req)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			b.WriteString(protojson.Format(e))
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestJoinedGatewayRenewsItsCertificate runs a gateway that joins with a
// token, as `outpost gateway --join-token` does, against a control plane
// issuing 6-second certificates: it renews before expiry, writes the new
// certificate, moves to it, and deploys with it after the first one
// expired.
func TestJoinedGatewayRenewsItsCertificate(t *testing.T) {
	logs, opt := capture(slog.LevelInfo)
	s := newSystem(t, 2, func(int) string { return dcA }, opt,
		withCPConfig(func(c *controlplane.Config) { c.GatewayCertTTL = 6 * time.Second }))
	token, err := s.client.JoinToken(ctxT(t), "gw-renew", dcA)
	if err != nil {
		t.Fatal(err)
	}
	credFile := filepath.Join(s.dir, "gw-renew.pem")
	s.runGateway("gw-renew", dcA, gateway.Config{
		CredentialFile: credFile,
		JoinToken:      token,
		SSH:            gateway.SSHConfig{Signers: []ssh.Signer{s.fleet.Signer}, KnownHostsFiles: []string{s.fleet.KnownHosts}},
	})
	first := waitCredential(t, credFile, "")
	s.deploy("v1", "100%")

	second := waitCredential(t, credFile, pki.SerialString(first.Leaf()))
	if second.Identity != first.Identity {
		t.Errorf("renewed credential is for %v, want %v", second.Identity, first.Identity)
	}
	// Past the first certificate's end, the gateway still deploys.
	time.Sleep(time.Until(first.Leaf().NotAfter) + 500*time.Millisecond)
	s.deploy("v2", "100%")
	for _, want := range []string{"certificate renewed", "reconnecting to the control plane with the renewed certificate"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the logs", want)
		}
	}
}

// waitCredential waits until path holds a credential whose serial is not
// notSerial, and returns it.
func waitCredential(t *testing.T, path, notSerial string) *pki.Credential {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if c, err := pki.LoadCredential(path); err == nil && pki.SerialString(c.Leaf()) != notSerial {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no new credential in %s within %v", path, waitLimit)
	return nil
}

// TestHostKeysScannedAndTrustedThroughTheGateway runs a gateway without
// known_hosts, so only pinned keys are trusted: a deployment fails at
// connect until an admin scans each node (through the gateway, with
// outpost node scan), checks the fingerprint and pins it (outpost node
// trust); then it succeeds.
func TestHostKeysScannedAndTrustedThroughTheGateway(t *testing.T) {
	s := newSystem(t, 2, func(int) string { return dcA })
	cred, err := s.client.JoinGateway(ctxT(t), "gw-a", dcA)
	if err != nil {
		t.Fatal(err)
	}
	s.runGateway("gw-a", dcA, gateway.Config{
		SSH:         gateway.SSHConfig{Signers: []ssh.Signer{s.fleet.Signer}},
		DialOptions: []grpc.DialOption{e2etest.TLSDialOption(cred)},
	})

	// Nothing is trusted on first use.
	_, digest := s.release("v1", true)
	r := s.create(e2etest.RollingPlan("release-v1.tar.gz", "100%", 100), digest)
	if done := s.waitDone(r.GetId()); done.GetNodeCounts().GetSucceeded() != 0 {
		t.Fatalf("rollout with unknown host keys: %v, %v succeeded", done.GetState(), done.GetNodeCounts())
	}
	for id, n := range s.rolloutNodes(r.GetId()) {
		if n.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || n.GetStep() != outpostv1.Step_STEP_CONNECT || !strings.Contains(n.GetError(), "host key") {
			t.Errorf("node %s: %v at %v (%q), want FAILED at connect for its host key", id, n.GetState(), n.GetStep(), n.GetError())
		}
	}

	hosts := s.fleet.Hosts()
	for i, n := range s.nodes {
		want := ssh.FingerprintSHA256(hosts[i].HostKey)
		// The scan may race the gateway's scan stream right after start.
		var out string
		for range 50 {
			var code int
			if code, out = s.runCLI(t, "node", "scan", n.GetId(), "--controlplane", s.addr); code == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(out, "through gateway gw-a") || !strings.Contains(out, "ssh-ed25519 "+want) || !strings.Contains(out, "Not pinned") {
			t.Fatalf("node scan %s printed %q, want gw-a reading %s", n.GetId(), out, want)
		}
		other := ssh.FingerprintSHA256(hosts[1-i].HostKey)
		if code, _ := s.runCLI(t, "node", "trust", n.GetId(), "--fingerprint", other, "--controlplane", s.addr); code != 1 {
			t.Errorf("node trust %s with another host's fingerprint: exit %d, want 1", n.GetId(), code)
		}
		if code, out := s.runCLI(t, "node", "trust", n.GetId(), "--fingerprint", want, "--controlplane", s.addr); code != 0 || !strings.Contains(out, "pinned "+want) {
			t.Fatalf("node trust %s: exit %d, output %q", n.GetId(), code, out)
		}
		got, err := s.client.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: n.GetId()})
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hosts[i].HostKey)))
		if err != nil || len(got.GetNode().GetHostKeys()) != 1 || got.GetNode().GetHostKeys()[0] != line {
			t.Errorf("node %s host keys %q (%v), want [%q]", n.GetId(), got.GetNode().GetHostKeys(), err, line)
		}
	}
	s.deploy("v2", "100%")
}

// TestSecretsStayOutOfLogsTracesEtcdAndAudit deploys to nodes that take a
// password only, through a gateway that also offers a key they refuse and
// that joined with a join token; the password, the key and the token's
// secret appear in no log line of the control plane or the gateway, no
// span, no audit entry and no etcd key or value.
func TestSecretsStayOutOfLogsTracesEtcdAndAudit(t *testing.T) {
	var b [12]byte
	rand.Read(b[:])
	password := "pw-" + hex.EncodeToString(b[:])
	logs, opt := capture(slog.LevelDebug)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(telemetry.ProviderOptions(telemetry.Service{Name: telemetry.ServiceControlPlane}, sdktrace.WithSpanProcessor(rec))...)
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	s := &system{t: t, dir: t.TempDir(), gateways: map[string]*runningGateway{}, creds: map[string]*pki.Credential{}, tp: tp}
	opt(s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fl, err := simfleet.Start(ctx, simfleet.Config{Hosts: 2, Dir: filepath.Join(s.dir, "hosts"), Password: password, ServicePath: e2etest.DeployPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	known := filepath.Join(s.dir, "known_hosts")
	if err := fl.WriteKnownHosts(known); err != nil {
		t.Fatal(err)
	}
	s.fleet = &e2etest.Fleet{Fleet: fl, KnownHosts: known}
	s.nodes = s.fleet.Nodes(func(int) string { return dcA })
	s.startCP()
	t.Cleanup(s.stopAll)
	if s.client, err = e2etest.Dial(s.addr, s.admin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.client.Close() })
	if err := s.client.Apply(ctxT(t), s.nodes); err != nil {
		t.Fatal(err)
	}

	// A key the nodes refuse: offered first, so its material is in play.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(block)
	keyFile, pwFile := filepath.Join(s.dir, "id_ed25519"), filepath.Join(s.dir, "password")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token, err := s.client.JoinToken(ctxT(t), "gw-a", dcA)
	if err != nil {
		t.Fatal(err)
	}
	s.runGateway("gw-a", dcA, gateway.Config{
		CredentialFile: filepath.Join(s.dir, "gw-a.pem"),
		JoinToken:      token,
		SSH:            gateway.SSHConfig{KeyFiles: []string{keyFile}, PasswordFile: pwFile, KnownHostsFiles: []string{known}},
	})
	s.deploy("v1", "100%")

	secrets := map[string]string{"the SSH password": password}
	tokenSecret, _, _ := strings.Cut(strings.TrimPrefix(token, pki.JoinTokenPrefix), ".")
	secrets["the join token's secret"] = tokenSecret
	body := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(string(keyPEM), "-----BEGIN OPENSSH PRIVATE KEY-----"), "-----END OPENSSH PRIVATE KEY-----\n"))
	for i, line := range strings.Split(body, "\n") {
		if len(line) >= 16 {
			secrets[fmt.Sprintf("line %d of the SSH private key", i+1)] = line
		}
	}
	// The CA's private key: etcd holds it only sealed.
	caKey, err := os.ReadFile(filepath.Join(s.dir, "controlplane", auth.PKIDir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caBody := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(string(caKey), "-----BEGIN PRIVATE KEY-----"), "-----END PRIVATE KEY-----\n"))
	for i, line := range strings.Split(caBody, "\n") {
		if len(line) >= 16 {
			secrets[fmt.Sprintf("line %d of the CA private key", i+1)] = line
		}
	}
	check := func(where, text string) {
		t.Helper()
		if text == "" {
			t.Errorf("%s: nothing to check", where)
		}
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds %s", where, what)
			}
		}
	}

	// The audit log, through the API. The engine's entries are queued,
	// so wait (bounded) until the node results are in.
	var audit string
	for range 100 {
		if audit = s.auditLog(); strings.Contains(audit, "JoinGateway") && strings.Contains(audit, "node.result") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(audit, "JoinGateway") || !strings.Contains(audit, "node.result") {
		t.Errorf("the audit log lacks the join or the node results:\n%s", tail(audit, 2000))
	}
	check("the audit log", audit)

	s.stopAll()
	check("the logs", logs.String())
	if !strings.Contains(logs.String(), "joined the control plane") {
		t.Errorf("the gateway did not log its join")
	}

	var spans strings.Builder
	for _, sp := range rec.Ended() {
		fmt.Fprintf(&spans, "%s %s %s\n", sp.Name(), sp.Status().Description, sp.Attributes())
		for _, ev := range sp.Events() {
			fmt.Fprintf(&spans, "  %s %s\n", ev.Name, ev.Attributes)
		}
	}
	// The API call's SERVER span and the rollout trace's root.
	if !strings.Contains(spans.String(), "outpost.v1.ControlPlaneService/CreateRollout") || !strings.Contains(spans.String(), "outpost.rollout ") {
		t.Errorf("no CreateRollout span recorded:\n%s", tail(spans.String(), 2000))
	}
	check("the spans", spans.String())

	// Every key and value in etcd, read from the stopped control plane's
	// data directory.
	st, err := store.Open(ctx, store.Config{DataDir: filepath.Join(s.dir, "controlplane"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	resp, err := st.Client().Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	var kv bytes.Buffer
	for _, item := range resp.Kvs {
		kv.Write(item.Key)
		kv.Write(item.Value)
	}
	if resp.Count < 10 {
		t.Errorf("etcd holds %d keys; want the rollout, nodes, audit...", resp.Count)
	}
	check("etcd", kv.String())
}
