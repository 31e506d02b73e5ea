package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/artifactcache"
	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshca"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// nodeDeployer deploys one assignment's release to its node.
type nodeDeployer interface {
	Deploy(ctx context.Context, job deployer.Job, emit func(*outpostv1.NodeStepEvent)) deployer.Result
}

var _ nodeDeployer = (*deployer.Deployer)(nil)

// artifactGetter returns verified artifacts, pinned in the cache until
// released.
type artifactGetter interface {
	Get(ctx context.Context, sha256 string) (*artifactcache.Pin, error)
	// Cached returns a cached artifact without fetching it: the base of a
	// delta upload.
	Cached(sha256 string) (*artifactcache.Pin, bool)
}

var _ artifactGetter = (*artifactcache.Cache)(nil)

// shutdownFlush bounds how long Run, after its ctx ended and the last
// deployment finished, waits for the control plane to acknowledge the
// remaining results before it closes the stream.
var shutdownFlush = 5 * time.Second

// Gateway is the gateway daemon. Create it with New and start it with Run.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	auth   sshexec.Auth         // loaded once by New
	ca     *sshca.Authority     // nil without SSH.CAKeyFile
	dials  *sshexec.DialLimiter // shared by every node's connection set-up
	tracer trace.Tracer
	deploy nodeDeployer
	// closeDeployer stops the real deployer's background work (tests may
	// wrap deploy).
	closeDeployer func()
	reg           *prometheus.Registry
	met           *metrics
	out           *outbox
	ran           atomic.Bool
	cache         artifactGetter // set by Run before any deployment starts
	deployments   sync.WaitGroup // deployment goroutines
	sigs          signatureChecks

	mu          sync.Mutex
	tasks       map[string]*task // guarded by mu: accepted, queued or deploying
	queue       []*task          // guarded by mu: accepted, waiting for a slot, in order
	active      int              // guarded by mu: deploying now
	finished    recentSet        // guarded by mu: assignments that have a result
	epoch       int64            // guarded by mu: leader epoch of the latest welcome
	closing     bool             // guarded by mu: Run's ctx ended; nothing new starts
	metricsAddr string           // guarded by mu
}

// New validates cfg and loads the SSH credentials. It does not touch the
// network; Run does.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	if cfg.CredentialFile != "" {
		if err := cfg.resolveIdentity(); err != nil {
			return nil, err
		}
	}
	auth, err := loadAuth(cfg.SSH)
	if err != nil {
		return nil, err
	}
	ca, err := loadCA(cfg.SSH, cfg.Now)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: CacheDir: %w", err)
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("gateway", cfg.Name),
		auth:     auth,
		ca:       ca,
		dials:    sshexec.NewDialLimiter(cfg.SSH.MaxHandshakes),
		tracer:   cfg.TracerProvider.Tracer("github.com/outposthq/outpost/gateway"),
		reg:      prometheus.NewRegistry(),
		out:      newOutbox(DefaultOutboxSize),
		tasks:    make(map[string]*task),
		finished: newRecentSet(1024),
	}
	if cfg.Datacenter != "" {
		// Else Run adds it once the join token decided it.
		g.log = g.log.With("datacenter", cfg.Datacenter)
	}
	if ca != nil {
		g.log.Info("ssh user CA loaded: each node deployment logs in with a certificate of its own",
			"ca", ssh.FingerprintSHA256(ca.PublicKey()), "validity", cfg.SSH.CertValidity)
	}
	g.met, err = newMetrics(g.reg)
	if err != nil {
		return nil, err
	}
	d, err := deployer.New(deployer.Config{
		Dial:   g.dialNode,
		Now:    cfg.Now,
		Logger: g.log,
		Tracer: g.tracer,
		// The metrics exist by now (newMetrics above).
		OnUpload: g.met.onUpload,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.deploy, g.closeDeployer = d, d.Close
	return g, nil
}

// Name returns the gateway's name.
func (g *Gateway) Name() string { return g.cfg.Name }

// Datacenter returns the datacenter the gateway serves; "" until Run has
// joined with a token that decides it.
func (g *Gateway) Datacenter() string { return g.cfg.Datacenter }

// Run connects to the control plane and serves it until ctx ends,
// reconnecting whenever the stream breaks. It may be called once.
//
// When ctx ends, Run refuses new assignments, drops queued ones, cancels
// deployments that have not reached the switch (they leave their node as
// it was and send no result, so the control plane assigns those nodes
// again rather than counting them as failed), waits for every deployment
// to finish (a node is never abandoned mid-switch), gives the control
// plane a few seconds to acknowledge the last results, and returns nil.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.ran.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	var cred *pki.Credential
	if g.cfg.CredentialFile != "" {
		var err error
		if cred, err = g.credential(ctx); cred == nil {
			return err // nil when ctx ended first
		}
		g.met.certExpiry.Set(gatewayCertName, cred.Leaf().NotAfter)
		if g.cfg.Datacenter == "" {
			// Joined with a token that chose the datacenter. Nothing
			// reads the config concurrently yet.
			g.cfg.Datacenter = cred.Identity.Datacenter
			g.log = g.log.With("datacenter", g.cfg.Datacenter)
		}
	}
	conn, err := g.dial(cred)
	if err != nil {
		return err
	}
	cp := newCPConn(conn)
	defer cp.Close()
	cache, err := artifactcache.New(artifactcache.Config{
		Dir:        g.cfg.CacheDir,
		MaxBytes:   g.cfg.CacheMaxBytes,
		Now:        g.cfg.Now,
		Fetcher:    cp,
		Logger:     g.log,
		Registerer: g.reg,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.cache = cache
	stopMetrics, err := g.serveMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()

	// The link outlives ctx a little, to deliver the results of the
	// deployments that finish during shutdown.
	linkCtx, stopLink := context.WithCancel(context.WithoutCancel(ctx))
	var links sync.WaitGroup
	links.Add(2)
	go func() {
		defer links.Done()
		g.link(linkCtx, cp)
	}()
	go func() {
		defer links.Done()
		g.scanLink(linkCtx, cp)
	}()
	if cred != nil {
		links.Add(1)
		go func() {
			defer links.Done()
			g.renew(linkCtx, cp, cred)
		}()
	}

	<-ctx.Done()
	g.log.Info("gateway stopping")
	g.beginShutdown()
	g.deployments.Wait()
	g.closeDeployer() // its background work, once no deployment runs
	g.flush(linkCtx, shutdownFlush)
	stopLink()
	links.Wait()
	g.log.Info("gateway stopped")
	return nil
}

// flush waits until the control plane has acknowledged everything the
// outbox holds, or until timeout.
func (g *Gateway) flush(ctx context.Context, timeout time.Duration) {
	if g.out.pending() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for g.out.pending() > 0 {
		select {
		case <-ctx.Done():
			g.log.Warn("stopping with unacknowledged results", "messages", g.out.pending())
			return
		case <-tick.C:
		}
	}
}
