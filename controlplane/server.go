package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outposthq/outpost/controlplane/analysis"
	"github.com/outposthq/outpost/controlplane/artifact"
	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/notify"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/watchhub"
	"github.com/outposthq/outpost/internal/clock"
	"github.com/outposthq/outpost/internal/connlimit"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Defaults for Config.
const (
	DefaultListen         = "127.0.0.1:7443"
	DefaultGatewayWaitLog = rollout.DefaultGatewayWaitLog
	DefaultGatewayGrace   = rollout.DefaultOrphanGrace
	// startTimeout bounds how long Start waits for a leader to exist when
	// ctx has no deadline.
	startTimeout = time.Minute
	// resignTimeout bounds giving up leadership on the way out.
	resignTimeout = 2 * time.Second
	// serverCertTTL is the server certificate's lifetime. A new one is
	// issued at every start, so it only has to outlive one run.
	serverCertTTL = 365 * 24 * time.Hour
	// notifyFlush bounds how long Shutdown waits for webhooks.
	notifyFlush = 5 * time.Second
	// auditReconcileAttempts bounds the tries of one term's audit
	// reconciliation (see reconcileAudit).
	auditReconcileAttempts = 5
)

// Connection limits (see Config and package internal/connlimit).
const (
	// DefaultHandshakeTimeout bounds a new connection's TLS handshake and
	// HTTP/2 preface: a client on any real link needs a fraction of it.
	DefaultHandshakeTimeout = 10 * time.Second
	// MinHandshakeTimeout and MaxHandshakeTimeout bound
	// Config.HandshakeTimeout.
	MinHandshakeTimeout = 100 * time.Millisecond
	MaxHandshakeTimeout = 2 * time.Minute
	// DefaultMaxUnauthenticatedConns is the default cap on connections
	// without a verified client certificate, when the file limit allows.
	DefaultMaxUnauthenticatedConns = 1024
	// DefaultMaxUnauthenticatedConnsPerIP is the default cap on those of
	// one source address.
	DefaultMaxUnauthenticatedConnsPerIP = 32
	// DefaultMaxStreamsPerConn bounds concurrent calls on one connection;
	// a gateway needs its control stream and a few artifact fetches.
	DefaultMaxStreamsPerConn = 128
	// ReservedFiles is how many of the open file limit the derived
	// MaxConns leaves to everything else: the embedded etcd (WAL,
	// database, snapshots, its listeners and client connections),
	// artifact files being read or written, metrics and webhooks.
	ReservedFiles = 256
	// minConns is the least MaxConns that serves anyone.
	minConns = 16
)

// Config configures a control plane.
type Config struct {
	// Listen is the gRPC address; "" means DefaultListen. ":0" picks a free
	// port (see Server.Addr).
	Listen string
	// DataDir holds the embedded etcd (DataDir/etcd) and, unless
	// ArtifactDir says otherwise, the artifact store (DataDir/artifacts).
	// Required.
	DataDir string
	// ArtifactDir is the artifact store's directory; "" means
	// DataDir/artifacts. Replicas sharing an external etcd must share it
	// too (a shared volume): an artifact uploaded through one replica is
	// fetched by gateways from whichever replica they reach, and the
	// leader may change between the upload and the fetch.
	ArtifactDir string
	// EtcdEndpoints are the client URLs of an external etcd cluster; empty
	// means an embedded single-node etcd in DataDir/etcd, reachable only
	// through a unix socket there. They must be https://, with
	// EtcdCertFile and EtcdKeyFile, unless EtcdInsecure is set.
	EtcdEndpoints []string
	// EtcdCAFile, EtcdCertFile and EtcdKeyFile are the CA that signs the
	// external etcd's server certificates ("" means the system's roots)
	// and this replica's client certificate and key (both or neither).
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// EtcdInsecure allows plain-text (http://) etcd endpoints, which
	// anyone on their network path can read and rewrite, and TLS ones
	// without a client certificate.
	EtcdInsecure bool
	// KEKFile holds the key-encryption key that seals the CA's private
	// key in etcd; "" means DataDir/ca.kek. It is created (0600) when
	// etcd has no sealed CA key yet. Replicas sharing an external etcd
	// must all have the same file; it must not be readable by group or
	// others, and it is not in etcd, so an etcd backup cannot sign
	// credentials.
	KEKFile string
	// MetricsListen is the address of the Prometheus /metrics endpoint;
	// "" means no metrics endpoint.
	MetricsListen string
	// ReplicaName names this replica in the election, lock owners and
	// logs; "" means the host name.
	ReplicaName string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider; nil means the otel global.
	TracerProvider trace.TracerProvider
	// GatewayWaitLog is how often "waiting for a gateway in datacenter X"
	// is logged again; 0 means DefaultGatewayWaitLog (30s).
	GatewayWaitLog time.Duration
	// ApprovalTTL is how long an approval holds for a rollout that has not
	// started yet (it waits for an earlier rollout of its app): then it
	// needs approving again. An environment's own ApprovalTTL wins. 0
	// means rollout.DefaultApprovalTTL (24h).
	ApprovalTTL time.Duration
	// AllowSelfApproval lets a requester approve their own rollout in
	// every environment, protected ones included (single-operator setups,
	// tests); false enforces four eyes except in the environments that set
	// Environment.AllowSelfApproval (config key allow_self_approval).
	AllowSelfApproval bool
	// ServerNames are extra DNS names and IP addresses for the server
	// certificate (a load balancer's name). Clients verify the control
	// plane under pki.ServerName, which every certificate carries, so
	// these matter only to other TLS clients.
	ServerNames []string
	// AdminCredentialFile is where the admin credential is written on
	// first start (and renewed); "" means DataDir/admin.pem. The CLI on
	// this machine finds it there.
	AdminCredentialFile string
	// GatewayCertTTL is the lifetime of gateway certificates; 0 means
	// auth.DefaultGatewayCertTTL. Gateways renew after two thirds of it.
	GatewayCertTTL time.Duration
	// Environments are the declared deployment environments, by name
	// (see Environment); nil declares none: plans may name any
	// environment and no hook allow-list applies.
	Environments map[string]Environment
	// AnalysisProviders are the metric providers (Prometheus endpoints)
	// that plans' canary analysis may name; nil declares none, and a plan
	// with analysis is refused.
	AnalysisProviders []analysis.ProviderConfig
	// LeaderTTL is the lease TTL of the leader election, in whole seconds:
	// when the leader dies (or stalls this long), another replica takes
	// over within about this long. 0 means leader.DefaultTTL (10s).
	LeaderTTL time.Duration
	// GatewayGrace is how long the nodes of a gateway that disconnected
	// mid-deployment wait for it to come back before they are handed to
	// another gateway of the datacenter. 0 means rollout.DefaultOrphanGrace
	// (30s).
	GatewayGrace time.Duration
	// MaxPerDatacenter bounds the node deployments running at once in one
	// datacenter over all its gateways (rollout.Config.MaxPerDatacenter);
	// 0 means only the gateways' capacities bound them.
	MaxPerDatacenter int
	// MaxWatchersPerCaller bounds the WatchRollout streams one identity
	// holds at once; 0 means watchhub.DefaultMaxPerCaller (10).
	MaxWatchersPerCaller int
	// MaxWatchers bounds the WatchRollout streams this replica serves at
	// once; 0 means watchhub.DefaultMaxTotal (500).
	MaxWatchers int

	// FileLimit is the process's open file limit (RLIMIT_NOFILE), from
	// which MaxConns is derived; 0 means the current soft limit.
	FileLimit uint64
	// MaxConns bounds the API connections open at once; a new one over it
	// is closed. 0 means FileLimit minus ReservedFiles, so a flood of
	// connections cannot take the descriptors etcd needs to stay alive.
	MaxConns int
	// MaxUnauthenticatedConns bounds the connections that have not shown
	// a verified client certificate (in their handshake, joining, or
	// never finishing); when full, the oldest is closed to make room. 0
	// means DefaultMaxUnauthenticatedConns, at most half of MaxConns.
	MaxUnauthenticatedConns int
	// MaxUnauthenticatedConnsPerIP bounds those of one source address (an
	// IPv6 /64 counts as one); more are closed at once. 0 means
	// DefaultMaxUnauthenticatedConnsPerIP, at most
	// MaxUnauthenticatedConns.
	MaxUnauthenticatedConnsPerIP int
	// HandshakeTimeout bounds a new connection's TLS handshake and HTTP/2
	// preface; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxStreamsPerConn bounds the concurrent calls on one connection;
	// more wait for one to end. 0 means DefaultMaxStreamsPerConn.
	MaxStreamsPerConn int
	// Clock paces the rollout engine (approval expiry, gateway grace,
	// heartbeat timeouts, bake rounds) and stamps rollout records; nil
	// means clock.Real. Tests set a clocktest.Fake to move time by hand.
	Clock clock.Clock

	// Knobs for tests in this package; zero means the engine's defaults.
	heartbeatInterval time.Duration
	refuseBackoff     time.Duration
	// auditQueueSize is audit.Config.QueueSize.
	auditQueueSize int
	// wrapKV, when set, wraps the etcd client's KV as soon as the store
	// opens (storetest.DelayedKV makes one writer slow).
	wrapKV func(clientv3.KV) clientv3.KV
	// failCreate, when set, runs after CreateRollout wrote a rollout's node
	// records and before it writes the rollout; an error fails the create.
	failCreate func(rolloutID string) error
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.DataDir == "" {
		return errors.New("controlplane: DataDir is required")
	}
	if c.GatewayWaitLog < 0 || c.LeaderTTL < 0 || c.GatewayGrace < 0 || c.MaxPerDatacenter < 0 {
		return errors.New("controlplane: negative GatewayWaitLog, LeaderTTL, GatewayGrace or MaxPerDatacenter")
	}
	if c.MaxWatchersPerCaller < 0 || c.MaxWatchers < 0 {
		return fmt.Errorf("controlplane: negative MaxWatchersPerCaller %d or MaxWatchers %d", c.MaxWatchersPerCaller, c.MaxWatchers)
	}
	if c.ArtifactDir == "" {
		c.ArtifactDir = filepath.Join(c.DataDir, "artifacts")
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.ReplicaName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "controlplane"
		}
		c.ReplicaName = h
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.GatewayWaitLog == 0 {
		c.GatewayWaitLog = DefaultGatewayWaitLog
	}
	if c.AdminCredentialFile == "" {
		c.AdminCredentialFile = filepath.Join(c.DataDir, auth.AdminCredentialFile)
	}
	if c.KEKFile == "" {
		c.KEKFile = filepath.Join(c.DataDir, auth.KEKFile)
	}
	if c.GatewayCertTTL < 0 {
		return fmt.Errorf("controlplane: negative GatewayCertTTL %v", c.GatewayCertTTL)
	}
	return c.setConnLimits()
}

// setConnLimits validates and derives the connection limits.
func (c *Config) setConnLimits() error {
	switch {
	case c.MaxConns < 0:
		return fmt.Errorf("controlplane: negative MaxConns %d", c.MaxConns)
	case c.MaxUnauthenticatedConns < 0:
		return fmt.Errorf("controlplane: negative MaxUnauthenticatedConns %d", c.MaxUnauthenticatedConns)
	case c.MaxUnauthenticatedConnsPerIP < 0:
		return fmt.Errorf("controlplane: negative MaxUnauthenticatedConnsPerIP %d", c.MaxUnauthenticatedConnsPerIP)
	case c.MaxStreamsPerConn < 0 || c.MaxStreamsPerConn > math.MaxUint32:
		return fmt.Errorf("controlplane: MaxStreamsPerConn %d must be between 0 and %d", c.MaxStreamsPerConn, uint32(math.MaxUint32))
	case c.HandshakeTimeout != 0 && (c.HandshakeTimeout < MinHandshakeTimeout || c.HandshakeTimeout > MaxHandshakeTimeout):
		return fmt.Errorf("controlplane: HandshakeTimeout %v must be between %v and %v", c.HandshakeTimeout, MinHandshakeTimeout, MaxHandshakeTimeout)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxStreamsPerConn == 0 {
		c.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if c.FileLimit == 0 {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("controlplane: read the open file limit: %w", err)
		}
		c.FileLimit = lim.Cur
	}
	if c.MaxConns == 0 {
		if c.FileLimit < ReservedFiles+minConns {
			return fmt.Errorf("controlplane: the open file limit %d leaves fewer than %d connections once %d files are kept for etcd and artifacts; raise it (ulimit -n, systemd LimitNOFILE=) or set MaxConns",
				c.FileLimit, minConns, ReservedFiles)
		}
		c.MaxConns = int(min(c.FileLimit-ReservedFiles, math.MaxInt32))
	}
	if c.MaxUnauthenticatedConns == 0 {
		c.MaxUnauthenticatedConns = max(1, min(DefaultMaxUnauthenticatedConns, c.MaxConns/2))
	}
	if c.MaxUnauthenticatedConnsPerIP == 0 {
		c.MaxUnauthenticatedConnsPerIP = min(DefaultMaxUnauthenticatedConnsPerIP, c.MaxUnauthenticatedConns)
	}
	if c.MaxUnauthenticatedConns > c.MaxConns {
		return fmt.Errorf("controlplane: MaxUnauthenticatedConns %d exceeds MaxConns %d", c.MaxUnauthenticatedConns, c.MaxConns)
	}
	if c.MaxUnauthenticatedConnsPerIP > c.MaxUnauthenticatedConns {
		return fmt.Errorf("controlplane: MaxUnauthenticatedConnsPerIP %d exceeds MaxUnauthenticatedConns %d", c.MaxUnauthenticatedConnsPerIP, c.MaxUnauthenticatedConns)
	}
	return nil
}

// Server is a running control plane.
type Server struct {
	cfg       Config
	log       *slog.Logger
	tracer    trace.Tracer
	store     *store.Store
	artifacts *artifact.Store
	grpc      *grpc.Server
	health    *health.Server
	addr      string
	metrics   *rollout.Metrics
	fetchMet  *artifactMetrics
	leaderMet *leaderMetrics
	rollouts  *rolloutCollector
	events    *eventHub
	watches   *watchhub.Hub
	httpSrv   *http.Server // nil without MetricsListen
	metricsLn net.Listener
	conns     *connlimit.Listener // the API listener
	auth      *auth.Authority
	audit     *audit.Log
	auditSrv  *audit.Server
	notifier  *notify.Notifier
	envs      environments
	providers *analysis.Providers
	scans     *scanHub
	// verifies admits VerifyNodes calls; inFlight joins observations of
	// one node (verify_limits.go).
	verifies verifyGate
	inFlight verifyFlights
	// tarMeasures caches the unpacked sizes of tar artifacts.
	tarMeasures tarMeasures

	// quit is closed by Shutdown: long-lived streams end.
	quit   chan struct{}
	cancel context.CancelFunc // stops the leader loop
	wg     sync.WaitGroup     // serve goroutines and the leader loop

	// verbCalls joins rollout verb calls that repeat one in progress
	// (same request_id and content); see runVerb.
	verbCalls singleflight.Group

	mu       sync.Mutex // guards engine and leaderUp
	engine   *rollout.Engine
	leaderUp chan struct{} // closed when an engine first runs here

	shutdownOnce sync.Once
	shutdownErr  error

	// done is closed when the server failed (failure says why) or
	// Shutdown finished.
	done     chan struct{}
	doneOnce sync.Once
	failMu   sync.Mutex
	failure  error // guarded by failMu
}

// Start opens the stores, starts serving and campaigns for leadership. It
// returns once the API serves and a leader exists (this replica or
// another), bounded by ctx. ctx does not bound the Server's life: call
// Shutdown.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	envs, err := compileEnvironments(cfg.Environments)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	providers, err := analysis.NewProviders(cfg.AnalysisProviders)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: data dir: %w", err)
	}
	log := cfg.Logger.With("component", "controlplane", "replica", cfg.ReplicaName)
	s := &Server{
		cfg:       cfg,
		log:       log,
		tracer:    cfg.TracerProvider.Tracer("github.com/outposthq/outpost/controlplane"),
		events:    newEventHub(),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		leaderUp:  make(chan struct{}),
		envs:      envs,
		providers: providers,
		scans:     newScanHub(),
	}
	ok := false
	defer func() {
		if !ok {
			s.abandon()
		}
	}()

	s.store, err = store.Open(ctx, store.Config{
		DataDir:   cfg.DataDir,
		Endpoints: cfg.EtcdEndpoints,
		CAFile:    cfg.EtcdCAFile,
		CertFile:  cfg.EtcdCertFile,
		KeyFile:   cfg.EtcdKeyFile,
		Insecure:  cfg.EtcdInsecure,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if cfg.wrapKV != nil {
		c := s.store.Client()
		c.KV = cfg.wrapKV(c.KV)
	}
	// Every replica uses the one CA kept in etcd (its key sealed with the
	// KEK); its copy in DataDir/pki shows which CA that is.
	ca, err := auth.LoadOrCreateCA(ctx, s.store, filepath.Join(cfg.DataDir, auth.PKIDir), cfg.KEKFile)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	serverCert, err := ca.IssueServer(auth.ServerHosts(cfg.Listen, cfg.ServerNames...), serverCertTTL)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	s.auth, err = auth.New(ctx, auth.Config{Store: s.store, CA: ca, Logger: cfg.Logger, GatewayCertTTL: cfg.GatewayCertTTL})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	reg := prometheus.NewRegistry()
	auditMet, err := audit.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	s.audit, err = audit.New(audit.Config{
		Store: s.store,
		// The audit interceptors run outside the auth ones, so calls that
		// auth refuses are recorded too (who tried what, and the refusal);
		// the caller is named by the certificate TLS verified.
		Identity:    audit.PeerIdentity,
		ReplicaName: cfg.ReplicaName,
		Logger:      cfg.Logger,
		QueueSize:   cfg.auditQueueSize,
		Metrics:     auditMet,
		// Checkpoints of the hash chain are signed with the CA key, which
		// every client already trusts, so `outpost audit verify` needs
		// no other key.
		Signer: ca.Signer(),
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	s.auditSrv = audit.NewServer(s.audit)
	if s.notifier, err = notify.New(notify.Config{Logger: cfg.Logger}); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	s.artifacts, err = artifact.Open(cfg.ArtifactDir)
	if err != nil {
		return nil, err
	}

	// The Go and process collectors are prometheus.DefaultGatherer's,
	// served with it below (see metricsHandler).
	if s.metrics, err = rollout.NewMetrics(reg); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	if s.leaderMet, err = newLeaderMetrics(reg); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	s.rollouts = newRolloutCollector(s.store, func() bool { return s.leaderEngine() != nil })
	if err := reg.Register(s.rollouts); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	if err := registerCertExpiry(reg, serverCert, ca.Certificate()); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	grpcMet := newGRPCMetrics()
	if err := reg.Register(grpcMet); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	if s.fetchMet, err = newArtifactMetrics(reg); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	s.watches, err = watchhub.New(watchhub.Config{
		Store:        s.store,
		MaxPerCaller: cfg.MaxWatchersPerCaller,
		MaxTotal:     cfg.MaxWatchers,
		Registerer:   reg,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}

	if limit := cfg.FileLimit - min(cfg.FileLimit, ReservedFiles); uint64(cfg.MaxConns) > limit {
		log.Warn("MaxConns leaves etcd fewer than the reserved file descriptors: a flood of connections may make it fail",
			"max_conns", cfg.MaxConns, "file_limit", cfg.FileLimit, "reserved", ReservedFiles)
	}
	inner, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("controlplane: listen: %w", err)
	}
	s.conns, err = connlimit.NewListener(inner, connlimit.Config{
		MaxConns:                cfg.MaxConns,
		MaxUnauthenticated:      cfg.MaxUnauthenticatedConns,
		MaxUnauthenticatedPerIP: cfg.MaxUnauthenticatedConnsPerIP,
		HandshakeTimeout:        cfg.HandshakeTimeout,
		Logger:                  log,
	})
	if err != nil {
		inner.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	s.addr = inner.Addr().String()
	if err := registerConnMetrics(reg, s.conns); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	s.grpc = grpc.NewServer(
		// The limiter learns which connections authenticated.
		grpc.Creds(connlimit.Credentials(credentials.NewTLS(pki.ServerTLSConfig(ca, serverCert)))),
		// The limiter's deadline covers the TLS handshake; this one the
		// HTTP/2 preface after it too.
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxStreamsPerConn)),
		// A SERVER span per API call; the audit entry of the call names its trace.
		grpc.StatsHandler(telemetry.GRPCServerHandler(cfg.TracerProvider)),
		// The metrics come first so that they count refused calls too;
		// audit next, so that refused calls are recorded; authorization
		// last: no handler sees a call that is refused, and every handler
		// knows the caller.
		grpc.ChainUnaryInterceptor(grpcMet.UnaryServerInterceptor(), s.audit.UnaryServerInterceptor(), s.auth.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(grpcMet.StreamServerInterceptor(), s.audit.StreamServerInterceptor(), s.auth.StreamInterceptor()),
		// Gateways ping every 10 s so a dead link is noticed fast; allow
		// it, and no more: a client pinging faster is sent away.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	outpostv1.RegisterControlPlaneServiceServer(s.grpc, guardedControlPlane{controlPlaneService: &controlPlaneService{s: s}, envs: envs, providers: providers})
	outpostv1.RegisterArtifactServiceServer(s.grpc, &artifactService{s: s})
	outpostv1.RegisterGatewayServiceServer(s.grpc, &gatewayService{s: s, join: s.auth.JoinServer()})
	outpostv1.RegisterAdminServiceServer(s.grpc, s.auth.AdminServer())
	outpostv1.RegisterAuditServiceServer(s.grpc, s.auditSrv)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	grpcMet.InitializeMetrics(s.grpc)
	for _, name := range []string{"", outpostv1.ControlPlaneService_ServiceDesc.ServiceName,
		outpostv1.ArtifactService_ServiceDesc.ServiceName, outpostv1.GatewayService_ServiceDesc.ServiceName,
		outpostv1.AdminService_ServiceDesc.ServiceName, outpostv1.AuditService_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.conns); err != nil {
			s.fail(fmt.Errorf("controlplane: serve: %w", err))
		}
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-s.store.Done():
			err := s.store.Err()
			if err == nil {
				err = errors.New("store closed")
			}
			s.fail(fmt.Errorf("controlplane: state store: %w", err))
		case <-s.quit:
		}
	}()

	if cfg.MetricsListen != "" {
		if s.metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("controlplane: metrics listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metricsHandler(reg))
		s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics server stopped", "err", err)
			}
		}()
	}

	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.leaderLoop(lctx)
	}()
	if err := s.waitForLeader(ctx); err != nil {
		return nil, err
	}
	written, err := s.auth.EnsureAdminCredential(ctx, cfg.AdminCredentialFile, auth.LocalDialAddress(s.addr))
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	ok = true
	for _, name := range envs.unguarded() {
		s.log.Warn("protected environment has no hook allow-list: its hooks pass only the deny list, a seat belt, not a control; set hook_allow_list",
			"environment", name)
	}
	s.log.Info("control plane started", "addr", s.addr, "data_dir", cfg.DataDir, "metrics", s.MetricsAddr(),
		"max_conns", cfg.MaxConns, "max_unauthenticated_conns", cfg.MaxUnauthenticatedConns,
		"max_unauthenticated_conns_per_ip", cfg.MaxUnauthenticatedConnsPerIP, "handshake_timeout", cfg.HandshakeTimeout,
		"admin_credential", cfg.AdminCredentialFile, "admin_credential_written", written,
		"environments", strings.Join(envs.names(), ","))
	return s, nil
}

// AdminCredentialFile returns the path of the admin credential, which
// Start wrote unless a usable one was there.
func (s *Server) AdminCredentialFile() string { return s.cfg.AdminCredentialFile }

// waitForLeader waits until this replica leads or another one does, so
// callers of Start find a working cluster.
func (s *Server) waitForLeader(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.leaderUp:
			return nil
		case <-tick.C:
			if name, _, err := leader.Observe(ctx, s.store.Client(), store.LeaderPrefix); err == nil && name != s.cfg.ReplicaName {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("controlplane: wait for a leader: %w", ctx.Err())
		}
	}
}

// fail records that the server cannot go on, and says so loudly: the
// process must end (see Done) and be restarted.
func (s *Server) fail(err error) {
	s.failMu.Lock()
	first := s.failure == nil
	if first {
		s.failure = err
	}
	s.failMu.Unlock()
	if first {
		s.log.Error("control plane failed: it can no longer work and must be restarted", "err", err)
		s.doneOnce.Do(func() { close(s.done) })
	}
}

// Done returns a channel closed when the server failed by itself (its
// state store stopped, or it could no longer accept connections) or
// Shutdown finished. After a failure, call Shutdown and exit non-zero.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns why the server failed, or nil.
func (s *Server) Err() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failure
}

// Addr returns the gRPC address the server listens on.
func (s *Server) Addr() string { return s.addr }

// MetricsAddr returns the metrics address, or "" without MetricsListen.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Shutdown stops the server: the engine stops (its last writes are
// flushed), leadership is given up so another replica can take over at
// once, streams end, in-flight calls finish, and the stores close. When ctx
// expires first, calls are cut off. It waits for every goroutine and may be
// called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.log.Info("control plane shutting down")
	s.health.Shutdown()
	close(s.quit)
	s.auditSrv.Stop()
	s.cancel()

	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
		err = fmt.Errorf("controlplane: shutdown: %w", ctx.Err())
	}
	if s.httpSrv != nil {
		if herr := s.httpSrv.Shutdown(ctx); herr != nil {
			s.httpSrv.Close()
		}
	}
	s.wg.Wait()
	// The streams ended with the gRPC server: stop their feeds.
	s.watches.Close()
	// After the engine stopped: its last entries and notifications go
	// out too.
	if aerr := s.audit.Close(ctx); aerr != nil && err == nil {
		err = aerr
	}
	// A webhook that does not answer must not hold up the shutdown.
	nctx, ncancel := context.WithTimeout(ctx, notifyFlush)
	if nerr := s.notifier.Close(nctx); nerr != nil {
		s.log.Warn("notifications not delivered before shutdown", "err", nerr)
	}
	ncancel()
	s.auth.Close()
	if cerr := s.store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	s.log.Info("control plane stopped")
	s.doneOnce.Do(func() { close(s.done) })
	return err
}

// abandon releases what a failed Start opened.
func (s *Server) abandon() {
	close(s.quit)
	if s.cancel != nil {
		s.cancel()
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	if s.httpSrv != nil {
		s.httpSrv.Close()
	} else if s.metricsLn != nil {
		s.metricsLn.Close()
	}
	s.wg.Wait()
	if s.watches != nil {
		s.watches.Close()
	}
	if s.auditSrv != nil {
		s.auditSrv.Stop()
	}
	if s.audit != nil || s.notifier != nil {
		ctx, cancel := context.WithTimeout(context.Background(), resignTimeout)
		if s.audit != nil {
			s.audit.Close(ctx)
		}
		if s.notifier != nil {
			s.notifier.Close(ctx)
		}
		cancel()
	}
	if s.auth != nil {
		s.auth.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// leaderLoop campaigns and runs one engine per leadership term until ctx ends.
func (s *Server) leaderLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		l, err := leader.Campaign(ctx, leader.Config{
			Client: s.store.Client(),
			Prefix: store.LeaderPrefix,
			Name:   s.cfg.ReplicaName,
			TTL:    s.cfg.LeaderTTL,
			Logger: s.cfg.Logger,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("campaign failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		led := time.Now()
		err = s.lead(ctx, l)
		rctx, cancel := context.WithTimeout(context.Background(), resignTimeout)
		if rerr := l.Resign(rctx); rerr != nil {
			s.log.Debug("resign", "err", rerr)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("leadership ended; campaigning again", "epoch", l.Epoch(), "err", err)
		// A term that ends at once (etcd failing under us) must not turn
		// into a tight campaign loop.
		if time.Since(led) < time.Second {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		} else {
			backoff = 100 * time.Millisecond
		}
	}
}

// lead runs the engine for one leadership term.
func (s *Server) lead(ctx context.Context, l *leader.Leadership) error {
	eng, err := rollout.New(s.rolloutPolicy(rollout.Config{
		Store:          s.store,
		Fence:          l,
		Epoch:          l.Epoch(),
		ReplicaName:    s.cfg.ReplicaName,
		Logger:         s.cfg.Logger,
		TracerProvider: s.cfg.TracerProvider,
		Metrics:        s.metrics,
		Clock:          s.cfg.Clock,
		Events:         auditedSteps{hub: s.events, audit: s.audit},
		// Both only queue: the engine waits for the audit queue when it is
		// full (an audit entry is never dropped), never for a webhook.
		OnRolloutState: func(ctx context.Context, r *outpostv1.Rollout, from, to outpostv1.RolloutState, reason string) {
			s.audit.RecordRolloutState(ctx, r, from, to, reason)
			s.notifier.RolloutState(ctx, r, from, to, reason)
		},
		OnNodeResult: func(ctx context.Context, rolloutID string, n *outpostv1.RolloutNode) {
			s.audit.RecordRolloutNode(ctx, rolloutID, n)
		},
		GatewayWaitLog:    s.cfg.GatewayWaitLog,
		HeartbeatInterval: s.cfg.heartbeatInterval,
		OrphanGrace:       s.cfg.GatewayGrace,
		MaxPerDatacenter:  s.cfg.MaxPerDatacenter,
		RefuseBackoff:     s.cfg.refuseBackoff,
		Analysis:          s.providers,
		OnAnalysis:        s.audit.RecordAnalysis,
	}))
	if err != nil {
		return err
	}
	// Every write of an earlier term is older than this revision (their
	// fence failed once this term began), every write of this term's
	// engine newer: audit.Reconcile records what is older.
	startRev, err := s.store.Revision(ctx)
	if err != nil {
		return err
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		s.reconcileAudit(ectx, startRev)
	}()
	verifierDone := make(chan struct{})
	go func() {
		defer close(verifierDone)
		s.runVerifier(ectx)
	}()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-l.Done():
			cancel()
		case <-ectx.Done():
		}
	}()
	// Not under s.mu: a scrape may hold the count for a while.
	s.rollouts.invalidate()
	s.mu.Lock()
	s.engine = eng
	s.leaderMet.set(true)
	select {
	case <-s.leaderUp:
	default:
		close(s.leaderUp)
	}
	s.mu.Unlock()
	err = eng.Run(ectx)
	s.mu.Lock()
	s.engine = nil
	s.leaderMet.set(false)
	s.mu.Unlock()
	cancel()
	<-watchDone
	<-reconciled
	<-verifierDone
	return err
}

// reconcileAudit writes the audit entries of node results (and rollout
// ends) that a previous leader made durable but died before recording,
// retrying a few times while the term lasts.
func (s *Server) reconcileAudit(ctx context.Context, startRev int64) {
	retry := time.Second
	for attempt := 1; ; attempt++ {
		n, err := s.audit.Reconcile(ctx, startRev, time.Now().Add(-audit.DefaultReconcileWindow))
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if n > 0 {
				s.log.Warn("recorded audit entries a previous leader lost", "entries", n)
			}
			return
		case attempt == auditReconcileAttempts:
			s.log.Error("reconciling the audit log failed; node results of the previous leadership term may lack entries", "err", err, "recorded", n)
			return
		}
		s.log.Warn("reconciling the audit log failed; will retry", "err", err, "recorded", n, "retry_in", retry)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry *= 2
	}
}

// auditedSteps passes the engine's step events to the watchers and records
// the finished steps in the audit log.
type auditedSteps struct {
	hub   *eventHub
	audit *audit.Log
}

var _ rollout.EventSink = auditedSteps{}

// Publish implements rollout.EventSink. It waits while the audit queue
// is full, bounded by the engine's ctx. The gateway that ran the step is
// the audit entry's actor.
func (a auditedSteps) Publish(ctx context.Context, rolloutID, gateway string, ev *outpostv1.NodeStepEvent) {
	a.hub.Publish(rolloutID, ev)
	a.audit.RecordNodeStep(ctx, gateway, ev)
}

// leaderEngine returns the running engine, or nil when this replica does
// not lead.
func (s *Server) leaderEngine() *rollout.Engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.engine
}
