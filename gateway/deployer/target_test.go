package deployer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/testproxy"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// target is one kind of node the deployer is tested against.
type target struct {
	name string
	node *outpostv1.Node
	ip   string
	// root is a directory of this machine the node's deploy paths go in.
	root string
	// dial connects through the normal path; dialBadKey expects a host key
	// the node does not have.
	dial, dialBadKey func(ctx context.Context, n *outpostv1.Node) (Remote, error)
	// corrupt prepares the next deployment of rel so that the bytes on the
	// node do not match the release's sha256, and returns the job's release
	// digest to use.
	corrupt func(t *testing.T, rel release) string
	// cutUpload arranges for the next deployment's upload to lose its
	// connection after about that many bytes, and returns what undoes it.
	cutUpload func(t *testing.T, f *fixture, after int64) (reset func())
	// homeInRoot reports whether the login's home is root, so that relative
	// deploy paths can be tested.
	homeInRoot bool
	// home is the login's $HOME when a test may deploy into it (a
	// directory of the test's), "" when it is the real home of the user
	// running the tests, which no test may touch.
	home string
	// cut drops every connection to the node open now.
	cut func()
}

// sshdTarget is a real OpenSSH sshd, reached through a proxy that can cut
// the connection (internal/testproxy).
func sshdTarget(t *testing.T) *target { return sshdTargetHome(t, "") }

// sshdTargetHome is sshdTarget with the sessions' $HOME set to home (sshd's
// SetEnv) when it is not "". The session still starts in the real home of
// the user running the tests.
func sshdTargetHome(t *testing.T, home string) *target {
	signer, pub := testsshd.ClientKey(t)
	opts := testsshd.Options{AuthorizedKeys: []ssh.PublicKey{pub}}
	if home != "" {
		opts.ExtraConfig = []string{"SetEnv HOME=" + home}
	}
	srv := testsshd.Start(t, opts)
	proxy := testproxy.StartOn(t, srv.IP, srv.Addr)
	dialer := func(hostKey ssh.PublicKey) func(ctx context.Context, n *outpostv1.Node) (Remote, error) {
		return func(ctx context.Context, n *outpostv1.Node) (Remote, error) {
			c, err := sshexec.Dial(ctx, sshexec.Config{
				Address:  n.GetAddress(),
				User:     n.GetUser(),
				Auth:     sshexec.Auth{Signers: []ssh.Signer{signer}},
				HostKeys: sshexec.HostKeys{Pinned: []ssh.PublicKey{hostKey}},
			})
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ssh.NewPublicKey(otherPriv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &target{
		name:       "sshd",
		node:       &outpostv1.Node{Id: "srv-000001", Address: proxy.Addr(), User: srv.User},
		ip:         srv.IP,
		root:       t.TempDir(),
		dial:       dialer(srv.HostKey),
		dialBadKey: dialer(other),
		corrupt: func(t *testing.T, rel release) string {
			// The bytes arrive intact; the release's digest is wrong.
			return "0000000000000000000000000000000000000000000000000000000000000000"
		},
		cutUpload: func(t *testing.T, f *fixture, after int64) func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.wrap = func(r *countingRemote) { r.cutAfter, r.cut = after, proxy.ResetAll }
			return func() {}
		},
		cut:  proxy.ResetAll,
		home: home,
	}
}

// fleetTarget is one host of the in-process fleet: /bin/sh (dash) runs the
// commands, and faults are injected by the host itself.
func fleetTarget(t *testing.T) *target { return fleetShellTarget(t, "fleet", simfleet.ShellProcess) }

// fleetInterpTarget is a fleet host whose commands run in the fleet's
// in-process shell, as the large benchmarks' fleets do: every scenario
// passing here as on sshd is what makes their figures about Outpost.
func fleetInterpTarget(t *testing.T) *target {
	return fleetShellTarget(t, "fleet-interp", simfleet.ShellInterp)
}

func fleetShellTarget(t *testing.T, name string, shell simfleet.Shell) *target {
	signer, pub := testsshd.ClientKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fleet, err := simfleet.Start(ctx, simfleet.Config{Hosts: 1, Dir: t.TempDir(), ClientKeys: []ssh.PublicKey{pub}, Shell: shell})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fleet.Close() })
	host := fleet.Hosts()[0]
	proxy := testproxy.StartOn(t, host.IP, host.Addr)
	dialer := func(hostKey ssh.PublicKey) func(ctx context.Context, n *outpostv1.Node) (Remote, error) {
		return func(ctx context.Context, n *outpostv1.Node) (Remote, error) {
			c, err := sshexec.Dial(ctx, sshexec.Config{
				Address:  n.GetAddress(),
				User:     n.GetUser(),
				Auth:     sshexec.Auth{Signers: []ssh.Signer{signer}},
				HostKeys: sshexec.HostKeys{Pinned: []ssh.PublicKey{hostKey}},
			})
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ssh.NewPublicKey(otherPriv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &target{
		name:       name,
		node:       &outpostv1.Node{Id: "srv-000002", Address: proxy.Addr(), User: "deploy"},
		ip:         host.IP,
		root:       host.Root,
		dial:       dialer(host.HostKey),
		dialBadKey: dialer(other),
		corrupt: func(t *testing.T, rel release) string {
			host.SetFaults(simfleet.Faults{CorruptUploads: true})
			t.Cleanup(func() { host.SetFaults(simfleet.Faults{}) })
			return rel.SHA256
		},
		cutUpload: func(t *testing.T, f *fixture, after int64) func() {
			host.SetFaults(simfleet.Faults{KillAfterUploadBytes: after})
			return func() { host.SetFaults(simfleet.Faults{}) }
		},
		homeInRoot: true,
		home:       host.Root,
		cut:        proxy.ResetAll,
	}
}

// forEachTarget runs fn against every kind of node.
func forEachTarget(t *testing.T, fn func(t *testing.T, tg *target)) {
	t.Helper()
	// Most of a test's time is the remote shells starting; overlapping
	// tests keeps the package fast on a small machine.
	t.Parallel()
	for _, mk := range []func(*testing.T) *target{sshdTarget, fleetTarget, fleetInterpTarget} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) { fn(t, tg) })
	}
}

// fixture is one deploy path on one target, with its health endpoint.
type fixture struct {
	tg         *target
	path       string
	healthPort int
	d          *Deployer

	mu      sync.Mutex
	remotes []*countingRemote // guarded by mu; every connection made
	// wrap, when set, adjusts each new connection (cut an upload...).
	wrap func(*countingRemote)
	// logs holds the deployer's log output.
	logs *logBuffer
}

// logBuffer collects log output written from deployment goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newFixture(t *testing.T, tg *target, name string) *fixture {
	t.Helper()
	f := &fixture{tg: tg, path: filepath.Join(tg.root, name), logs: &logBuffer{}}
	f.healthPort = serveHealth(t, tg.ip, simfleet.HealthHandler(f.path))
	d, err := New(Config{
		Dial:           f.dial,
		CleanupTimeout: 10 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	f.d = d
	return f
}

func (f *fixture) dial(ctx context.Context, n *outpostv1.Node) (Remote, error) {
	r, err := f.tg.dial(ctx, n)
	if err != nil {
		return nil, err
	}
	cr := &countingRemote{Remote: r}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wrap != nil {
		f.wrap(cr)
		f.wrap = nil // only the first connection
	}
	f.remotes = append(f.remotes, cr)
	return cr, nil
}

// dials returns how many connections were made.
func (f *fixture) dials() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.remotes)
}

// spec is the default spec: the simulated service's hooks and its HTTP
// health check.
func (f *fixture) spec() Spec {
	return Spec{
		Path:         f.path,
		KeepReleases: 5,
		Hooks:        Hooks{Stop: "sh bin/stop", Start: "sh bin/start"},
		Health: Health{
			HTTP:     &HTTPCheck{Port: f.healthPort, Path: "/health"},
			Timeout:  2 * time.Second,
			Interval: 100 * time.Millisecond,
		},
	}
}

func (f *fixture) job(id string, rel release) Job {
	return Job{
		Node: f.tg.node,
		Release: &outpostv1.Release{Id: id, App: "demo", Artifact: &outpostv1.Artifact{
			Sha256: rel.SHA256, Size: rel.Size, Name: id + ".tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
		}},
		ArtifactPath: rel.Path,
		Spec:         f.spec(),
		RolloutID:    "ro-" + id,
		Owner:        "gw-test",
		Epoch:        7,
	}
}

// deploy runs job and checks the event invariants.
func (f *fixture) deploy(t *testing.T, job Job) (Result, *events) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	evs := &events{}
	res := f.d.Deploy(ctx, job, evs.emit)
	checkEventInvariants(t, evs.list(), job.Node.GetId(), job.RolloutID)
	if (res.Err == nil) != (res.State == outpostv1.NodeState_NODE_STATE_SUCCEEDED) {
		t.Errorf("result %v with error %v: Err must be nil exactly on success", res.State, res.Err)
	}
	return res, evs
}

// mustDeploy deploys and requires success.
func (f *fixture) mustDeploy(t *testing.T, job Job) Result {
	t.Helper()
	res, evs := f.deploy(t, job)
	if res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Fatalf("deploy %s: %v at %v: %v\nevents: %v", job.Release.GetId(), res.State, res.Step, res.Err, evs.steps())
	}
	return res
}

func (f *fixture) healthURL() string {
	return "http://" + net.JoinHostPort(f.tg.ip, itoa(f.healthPort)) + "/health"
}

var errNoDial = errors.New("test: dial not expected")
