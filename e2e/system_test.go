package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	"github.com/outposthq/outpost/cli"
	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	// A child started by startCPProcess: the outpost command line.
	if os.Getenv(cliChildEnv) == "1" {
		os.Exit(cli.Main(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait of these tests: generous, since the machine
// is shared, yet far from the go test timeout so a hang fails with a
// message that says what it waited for.
const waitLimit = 45 * time.Second

// pollEvery is how often waits look again.
const pollEvery = 20 * time.Millisecond

// Datacenters of the two-gateway fleets; nodes alternate between them.
const (
	dcA = "dc-a"
	dcB = "dc-b"
)

func alternateDC(i int) string {
	if i%2 == 0 {
		return dcA
	}
	return dcB
}

// testLogger logs warnings (everything with OUTPOST_TEST_DEBUG=1) to
// stderr; not to t.Log, since etcd and gateways may log after a test ends.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("OUTPOST_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// system is the whole of Outpost on loopback: a control plane with its
// embedded etcd, real gateways running in this process, and an in-process
// SSH fleet whose hosts' files the tests read.
type system struct {
	t     *testing.T
	dir   string
	fleet *e2etest.Fleet
	nodes []*outpostv1.Node
	tp    trace.TracerProvider // nil: the otel global (a no-op)
	gwTP  trace.TracerProvider // the gateways'; nil: tp
	log   *slog.Logger
	// cpConfig, when set, adjusts the control plane's config.
	cpConfig func(*controlplane.Config)
	client   *e2etest.Client

	cp    *controlplane.Server
	addr  string          // the control plane's address, kept across restarts
	admin *pki.Credential // written by the control plane on its first start
	// adminFile is where the admin credential is, for the CLI.
	adminFile string

	mu       sync.Mutex
	gateways map[string]*runningGateway
	// creds are the gateways' credentials by name: a gateway joins once
	// and keeps its certificate across restarts, as its file would.
	creds map[string]*pki.Credential
}

type runningGateway struct {
	name, dc string
	cancel   context.CancelFunc
	done     chan error
}

type systemOption func(*system)

func withTracer(tp trace.TracerProvider) systemOption { return func(s *system) { s.tp = tp } }

// withTracers gives the control plane and the gateways providers of their
// own, as separate daemons have.
func withTracers(cp, gw trace.TracerProvider) systemOption {
	return func(s *system) { s.tp, s.gwTP = cp, gw }
}

// newSystem starts a fleet of hosts nodes in datacenters dcOf(i), applies
// them as the inventory, and starts a control plane. Gateways are started
// by the test. Everything stops when the test ends.
func newSystem(t *testing.T, hosts int, dcOf func(int) string, opts ...systemOption) *system {
	t.Helper()
	s := &system{t: t, dir: t.TempDir(), log: testLogger(), gateways: map[string]*runningGateway{}, creds: map[string]*pki.Credential{}}
	for _, o := range opts {
		o(s)
	}
	s.fleet = e2etest.StartFleet(t, hosts, s.dir)
	s.nodes = s.fleet.Nodes(dcOf)
	s.startCP()
	t.Cleanup(s.stopAll)
	c, err := e2etest.Dial(s.addr, s.admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s.client = c
	if err := c.Apply(ctxT(t), s.nodes); err != nil {
		t.Fatal(err)
	}
	return s
}

// startCP starts the control plane on its data directory, on the address
// it had before when it ran already.
func (s *system) startCP() {
	s.t.Helper()
	listen := s.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	cfg := controlplane.Config{
		Listen:         listen,
		DataDir:        filepath.Join(s.dir, "controlplane"),
		ReplicaName:    "cp-e2e",
		Logger:         s.log.With("component", "controlplane"),
		TracerProvider: s.tp,
	}
	if s.cpConfig != nil {
		s.cpConfig(&cfg)
	}
	cp, err := controlplane.Start(ctxT(s.t), cfg)
	if err != nil {
		s.t.Fatalf("start control plane: %v", err)
	}
	s.cp, s.addr = cp, cp.Addr()
	s.adminFile = cp.AdminCredentialFile()
	if s.admin, err = pki.LoadCredential(s.adminFile); err != nil {
		s.t.Fatalf("admin credential: %v", err)
	}
}

// stopCP shuts the control plane down gracefully.
func (s *system) stopCP() {
	s.t.Helper()
	if s.cp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s.cp.Shutdown(ctx); err != nil {
		s.t.Errorf("control plane Shutdown: %v", err)
	}
	s.cp = nil
}

// startGateway runs a real gateway for dc in this process until
// stopGateway or the end of the test. A gateway started again under the
// same name is a restarted gateway process: same name and cache, fresh
// memory.
func (s *system) startGateway(name, dc string) {
	s.t.Helper()
	s.mu.Lock()
	cred := s.creds[name]
	s.mu.Unlock()
	if cred == nil {
		var err error
		if cred, err = s.client.JoinGateway(ctxT(s.t), name, dc); err != nil {
			s.t.Fatal(err)
		}
		s.mu.Lock()
		s.creds[name] = cred
		s.mu.Unlock()
	}
	g, err := gateway.New(gateway.Config{
		ControlPlane: s.addr,
		Name:         name,
		Datacenter:   dc,
		Version:      e2eGatewayVersion,
		CacheDir:     filepath.Join(s.dir, "gateways", name),
		SSH: gateway.SSHConfig{
			Signers:         []ssh.Signer{s.fleet.Signer},
			KnownHostsFiles: []string{s.fleet.KnownHosts},
		},
		DialOptions:    []grpc.DialOption{e2etest.TLSDialOption(cred)},
		Logger:         s.log.With("component", "gateway", "gateway", name),
		TracerProvider: cmp.Or(s.gwTP, s.tp),
		// Reconnect fast after a control plane restart.
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 300 * time.Millisecond,
	})
	if err != nil {
		s.t.Fatalf("gateway.New(%s): %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rg := &runningGateway{name: name, dc: dc, cancel: cancel, done: make(chan error, 1)}
	go func() { rg.done <- g.Run(ctx) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gateways[name] != nil {
		s.t.Fatalf("gateway %s is already running", name)
	}
	s.gateways[name] = rg
}

// stopGateway cancels a gateway's Run, as SIGTERM does to `outpost
// gateway`, and waits for it to return.
func (s *system) stopGateway(name string) {
	s.t.Helper()
	s.mu.Lock()
	rg := s.gateways[name]
	delete(s.gateways, name)
	s.mu.Unlock()
	if rg == nil {
		return
	}
	rg.cancel()
	select {
	case err := <-rg.done:
		if err != nil {
			s.t.Errorf("gateway %s Run: %v", name, err)
		}
	case <-time.After(waitLimit):
		s.t.Errorf("gateway %s did not stop within %v", name, waitLimit)
	}
}

func (s *system) stopAll() {
	s.mu.Lock()
	var names []string
	for n := range s.gateways {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		s.stopGateway(n)
	}
	s.stopCP()
}

// twoGateways starts one gateway per datacenter of the alternating fleet.
func (s *system) twoGateways() {
	s.startGateway("gw-a", dcA)
	s.startGateway("gw-b", dcB)
}

// release builds version (healthy or broken) and uploads it.
func (s *system) release(version string, healthy bool) (simfleet.Release, string) {
	s.t.Helper()
	rel, err := simfleet.BuildRelease(s.t.TempDir(), version, healthy)
	if err != nil {
		s.t.Fatal(err)
	}
	digest, err := s.client.Upload(ctxT(s.t), rel.Path)
	if err != nil {
		s.t.Fatal(err)
	}
	if digest != rel.SHA256 {
		s.t.Fatalf("uploaded digest %s, release says %s", digest, rel.SHA256)
	}
	return rel, digest
}

// create submits plan for rel and checks the release id convention.
func (s *system) create(spec *outpostv1.PlanSpec, digest string) *outpostv1.Rollout {
	s.t.Helper()
	r, err := s.client.Create(ctxT(s.t), spec, digest)
	if err != nil {
		s.t.Fatal(err)
	}
	if want := fmt.Sprintf("r%d-%s", r.GetRevision(), digest[:8]); r.GetReleaseId() != want {
		s.t.Errorf("rollout %s release id = %q, want %q", r.GetId(), r.GetReleaseId(), want)
	}
	return r
}

// wait polls the rollout until ok accepts it.
func (s *system) wait(id, what string, ok func(*outpostv1.Rollout) bool) *outpostv1.Rollout {
	s.t.Helper()
	r, err := s.client.Wait(ctxT(s.t), id, pollEvery, ok)
	if err != nil {
		s.t.Fatalf("waiting for %s: %v", what, err)
	}
	return r
}

// waitDone waits for the rollout to end and returns it.
func (s *system) waitDone(id string) *outpostv1.Rollout {
	s.t.Helper()
	return s.wait(id, "the end of the rollout", func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) })
}

// deploy runs a rollout of a healthy version to every node and requires
// it to succeed; it returns the release id.
func (s *system) deploy(version, batch string) string {
	s.t.Helper()
	_, digest := s.release(version, true)
	r := s.create(e2etest.RollingPlan("release-"+version+".tar.gz", batch, 10), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		s.t.Fatalf("deploying %s: rollout %s ended %v: %q", version, r.GetId(), done.GetState(), done.GetMessage())
	}
	return r.GetReleaseId()
}

// nodes returns the rollout's node records by node id.
func (s *system) rolloutNodes(id string) map[string]*outpostv1.RolloutNode {
	s.t.Helper()
	list, err := s.client.Nodes(ctxT(s.t), id)
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]*outpostv1.RolloutNode{}
	for _, n := range list {
		out[n.GetNodeId()] = n
	}
	if len(out) != len(list) {
		s.t.Errorf("rollout %s lists %d node records for %d distinct nodes", id, len(list), len(out))
	}
	return out
}

// hostState is what one host holds, read from its files and its health
// endpoint.
type hostState struct {
	current string
	history []e2etest.HistoryEntry
	health  int // HTTP status, 0 when unreachable
	locked  bool
}

func (s *system) host(i int) hostState {
	s.t.Helper()
	h := s.fleet.Hosts()[i]
	cur, err := e2etest.Current(h)
	if err != nil {
		s.t.Fatal(err)
	}
	hist, err := e2etest.History(h)
	if err != nil {
		s.t.Fatal(err)
	}
	code, err := e2etest.Health(ctxT(s.t), h)
	if err != nil && !errors.Is(err, context.Canceled) {
		s.t.Errorf("%s: health: %v", h.Name, err)
	}
	return hostState{current: cur, history: hist, health: code, locked: e2etest.Locked(h)}
}

// checkOn checks that host i runs release, healthy, unlocked, activated
// exactly activations times by successful deployments of that release.
func (s *system) checkOn(i int, release string, activations int) hostState {
	s.t.Helper()
	h := s.host(i)
	name := s.fleet.Hosts()[i].Name
	if h.current != release {
		s.t.Errorf("%s: current -> %q, want %q", name, h.current, release)
	}
	if h.health != 200 {
		s.t.Errorf("%s: health = %d, want 200", name, h.health)
	}
	if h.locked {
		s.t.Errorf("%s: still locked after the rollout", name)
	}
	if n := e2etest.Activations(h.history, release); n != activations {
		s.t.Errorf("%s: %d successful activations of %s in history, want %d; history:\n%s", name, n, release, activations, historyText(h.history))
	}
	return h
}

func historyText(h []e2etest.HistoryEntry) string {
	out := ""
	for _, e := range h {
		out += fmt.Sprintf("  %s %s %s release=%s previous=%s epoch=%d: %s\n",
			e.Time.Format(time.StampMicro), e.Rollout, e.Action, e.Release, e.Previous, e.Epoch, e.Result)
	}
	return out
}

// countsOf is a NodeCounts literal for comparisons.
func countsOf(total, succeeded, rolledBack, skipped int32) *outpostv1.NodeCounts {
	return &outpostv1.NodeCounts{Total: total, Succeeded: succeeded, RolledBack: rolledBack, Skipped: skipped}
}

// setExecDelay slows every command on every host, so a rollout lasts long
// enough to interrupt it in the middle.
func (s *system) setExecDelay(d time.Duration) {
	for _, h := range s.fleet.Hosts() {
		h.SetFaults(simfleet.Faults{ExecDelay: d})
	}
}
