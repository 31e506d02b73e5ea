package cli

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/controlplane/analysis"
	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/watchhub"
	"github.com/outposthq/outpost/internal/telemetry"
)

var _ runningServer = (*controlplane.Server)(nil)

func controlplaneCommand() *command {
	return &command{
		name:  "controlplane",
		short: "run the control plane: the API, the rollout engine and the state store",
		usage: "outpost controlplane [--listen ADDR] [--data-dir DIR] [--config FILE] [--etcd-endpoints URLS] [flags]",
		long: `Runs a control plane until interrupted (SIGINT or SIGTERM), then shuts
down gracefully: rollouts keep their state and continue when a control
plane runs again.

The control plane serves the gRPC API that the outpost client verbs,
grpcurl (server reflection is on) and the gateways use, and runs the
rollout engine. Its state lives in etcd: by default an embedded single-node
etcd in --data-dir (nothing else to install; it listens only on a unix
socket in --data-dir/etcd, so no other local user reaches it), or an
external etcd cluster with --etcd-endpoints, in which case several control
planes may run: one leads and drives rollouts, the others serve and take
over when it dies. An external etcd is used over TLS (https:// endpoints,
--etcd-cacert, and a client certificate: --etcd-cert, --etcd-key);
http:// endpoints, or no client certificate, are refused unless
--etcd-insecure is given.
Uploaded artifacts are stored in --data-dir/artifacts (or --artifact-dir),
never in etcd; replicas sharing an etcd cluster must share that directory.
When the leader dies, another replica takes over within --leader-ttl
(default 10s) and continues every running rollout. If its state store
fails (the embedded etcd stops), the control plane logs why and exits 1:
restart it (systemd's Restart=on-failure does).

Connections that have not shown a client certificate are bounded, so a
flood of idle or half-open sockets cannot use up the file descriptors
etcd and the gateways need: each gets --handshake-timeout to finish its
TLS handshake, at most --max-unauthenticated-conns-per-ip come from one
address, and when --max-unauthenticated-conns is reached the oldest is
closed. The open file limit is raised to its hard limit at start and
--max-conns derived from it; raise the hard limit (LimitNOFILE=) for
large fleets.

Every connection is TLS (1.3) with client certificates. On first start
the control plane creates its CA in --data-dir/pki (shared with the other
replicas through etcd, its key sealed there with the key-encryption key in
--kek-file, default --data-dir/ca.kek: give every replica a copy of that
file, and keep it out of etcd backups) and an admin credential,
--data-dir/admin.pem, which
the client verbs find by themselves when run from the same directory with
the default --data-dir (else: export OUTPOST_CREDENTIAL=DATA-DIR/admin.pem,
as the ready log line says). With it,
make credentials for people (outpost user create NAME --role ROLE) and
join tokens for gateways (outpost token create --datacenter NAME). grpcurl
takes a credential file as certificate, key and CA at once:
  grpcurl -cert admin.pem -key admin.pem -cacert admin.pem \
      -servername controlplane.outpost.internal 127.0.0.1:7443 list

--config names a YAML file declaring the deployment environments. Once
any is declared, a plan must name one; a protected one needs an approval
by someone other than the requester; a hook allow-list holds regular
expressions, each matching a whole command, that every hook of a plan for
that environment must match; deploy path prefixes are the directories
under which its plans may deploy; allow_self_approval lets a requester
approve their own rollout in that environment (never a protected one;
by default someone else must):

  environments:
    prod:
      protected: true
      approval_ttl: 24h
      hook_allow_list: ["sudo systemctl (start|stop|restart) [a-z0-9-]+"]
      deploy_path_prefixes: [/srv, /opt/apps]
      verify_interval: 10m   # how often its nodes are checked for drift (default 15m, 0 never)
    staging: {}
    dev:
      allow_self_approval: true   # plans with approval.required: self-approval is fine here

It also declares the metric providers that canary analysis (a stage's
analysis in a plan) may query; plans name them, never URLs. Secrets are
read from files at each query and never logged:

  analysis_providers:
    - name: prom
      url: https://prometheus.internal:9090
      tls: {ca_file: /etc/outpost/prom-ca.pem}   # cert_file, key_file for mTLS
      bearer_token_file: /etc/outpost/prom-token
      timeout: 10s

Every key, with its default and what it does:
deploy/examples/controlplane-config.yaml in the source tree, or
/usr/share/doc/outpost/examples/controlplane-config.yaml where the
package is installed.

Examples:
  outpost controlplane
  outpost controlplane --config /etc/outpost/controlplane.yaml --server-name cp.example.internal
  outpost controlplane --listen 0.0.0.0:7443 --data-dir /var/lib/outpost --metrics-listen 127.0.0.1:9464
  outpost controlplane --etcd-endpoints https://etcd-1:2379,https://etcd-2:2379,https://etcd-3:2379 \
      --etcd-cacert /etc/outpost/etcd-ca.pem --etcd-cert /etc/outpost/etcd-client.pem \
      --etcd-key /etc/outpost/etcd-client-key.pem --kek-file /etc/outpost/ca.kek \
      --data-dir /var/lib/outpost --otel-endpoint 127.0.0.1:4317

See deploy/systemd/outpost-controlplane.service for a systemd unit.`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			listen := fs.String("listen", controlplane.DefaultListen, "gRPC `address` to serve on (port 0 picks a free port)")
			dataDir := fs.String("data-dir", ".outpost/controlplane", "`directory` for the embedded etcd and the artifact store")
			var etcd stringList
			fs.Var(&etcd, "etcd-endpoints", "external etcd client `URLs` (https://HOST:PORT), comma-separated; empty: embedded etcd in --data-dir, reachable only through a unix socket there")
			etcdCA := fs.String("etcd-cacert", "", "PEM `file` of the CA that signs the external etcd's server certificates; empty: the system's roots")
			etcdCert := fs.String("etcd-cert", "", "PEM client certificate `file` for the external etcd (with --etcd-key)")
			etcdKey := fs.String("etcd-key", "", "PEM client key `file` for the external etcd (with --etcd-cert)")
			etcdInsecure := fs.Bool("etcd-insecure", false, "allow plain-text etcd endpoints (http://, unix://), and https:// ones without --etcd-cert: anyone who reaches etcd reads and rewrites all state")
			kekFile := fs.String("kek-file", "", "key-encryption key `file` that seals the CA key in etcd (0600, created when etcd has no sealed CA key); replicas sharing an etcd need the same file. Empty: DATA-DIR/ca.kek")
			metrics := fs.String("metrics-listen", "", "serve Prometheus /metrics on this `address` (e.g. 127.0.0.1:9464); empty: off")
			otelEndpoint := fs.String("otel-endpoint", "", otelEndpointHelp)
			replica := fs.String("name", "", "replica name in leader election and logs; empty: the host name")
			artifactDir := fs.String("artifact-dir", "", "artifact store `directory`; empty: DATA-DIR/artifacts. Replicas sharing an etcd cluster must share it (a shared volume)")
			leaderTTL := fs.Duration("leader-ttl", leader.DefaultTTL, "leader lease `TTL` (whole seconds): a dead leader is replaced within about this long")
			gatewayGrace := fs.Duration("gateway-grace", controlplane.DefaultGatewayGrace, "how long the nodes of a disconnected gateway wait for it before they go to another gateway of the datacenter")
			perDC := fs.Int("max-per-datacenter", 0, "node deployments at once in one datacenter, over all its gateways (0 = only each gateway's --concurrency bounds them)")
			perCaller := fs.Int("max-watchers-per-caller", watchhub.DefaultMaxPerCaller, "rollout watches (`rollout watch`, the console) one user may hold at once")
			watchers := fs.Int("max-watchers", watchhub.DefaultMaxTotal, "rollout watches this control plane serves at once, over all users")
			configFile := fs.String("config", "", "YAML `FILE` declaring environments and analysis_providers (every key: deploy/examples/controlplane-config.yaml)")
			var serverNames stringList
			fs.Var(&serverNames, "server-name", "extra DNS `name` or IP for the server certificate (a load balancer's); repeatable")
			handshakeTimeout := fs.Duration("handshake-timeout", controlplane.DefaultHandshakeTimeout, "close a new connection whose TLS handshake is not done within this `duration`")
			maxConns := fs.Int("max-conns", 0, fmt.Sprintf("API connections open at once (0 = the open file limit minus %d kept for etcd and files)", controlplane.ReservedFiles))
			maxUnauth := fs.Int("max-unauthenticated-conns", 0, fmt.Sprintf("connections without a verified client certificate; when full the oldest is closed (0 = %d, at most half of --max-conns)", controlplane.DefaultMaxUnauthenticatedConns))
			maxUnauthPerIP := fs.Int("max-unauthenticated-conns-per-ip", 0, fmt.Sprintf("of those, from one IP address or IPv6 /64; more are closed at once (0 = %d)", controlplane.DefaultMaxUnauthenticatedConnsPerIP))
			maxStreams := fs.Int("max-streams-per-conn", controlplane.DefaultMaxStreamsPerConn, "concurrent calls on one connection; more wait")
			logs := addLogFlags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("controlplane takes no arguments")
				}
				if *perCaller < 1 || *watchers < 1 {
					return usagef("--max-watchers-per-caller and --max-watchers must be at least 1")
				}
				var envs map[string]controlplane.Environment
				var providers []analysis.ProviderConfig
				if *configFile != "" {
					fc, err := controlplane.LoadFileConfig(*configFile)
					if err != nil {
						return err
					}
					envs, providers = fc.Environments, fc.AnalysisProviders
				}
				log, err := logs.logger(env.Stderr)
				if err != nil {
					return err
				}
				fileLimit := raiseFileLimit(log)
				tp, stopTracing, err := tracing(ctx, telemetry.Service{Name: telemetry.ServiceControlPlane, InstanceID: *replica}, *otelEndpoint, log)
				if err != nil {
					return err
				}
				defer func() {
					sctx, cancel := shutdownContext()
					defer cancel()
					stopTracing(sctx)
				}()
				srv, err := controlplane.Start(ctx, controlplane.Config{
					Listen:            *listen,
					DataDir:           *dataDir,
					EtcdEndpoints:     etcd,
					EtcdCAFile:        *etcdCA,
					EtcdCertFile:      *etcdCert,
					EtcdKeyFile:       *etcdKey,
					EtcdInsecure:      *etcdInsecure,
					KEKFile:           *kekFile,
					MetricsListen:     *metrics,
					ReplicaName:       *replica,
					ArtifactDir:       *artifactDir,
					LeaderTTL:         *leaderTTL,
					GatewayGrace:      *gatewayGrace,
					MaxPerDatacenter:  *perDC,
					Logger:            log,
					TracerProvider:    tp,
					ServerNames:       serverNames,
					Environments:      envs,
					AnalysisProviders: providers,

					FileLimit:                    fileLimit,
					MaxConns:                     *maxConns,
					MaxUnauthenticatedConns:      *maxUnauth,
					MaxUnauthenticatedConnsPerIP: *maxUnauthPerIP,
					HandshakeTimeout:             *handshakeTimeout,
					MaxStreamsPerConn:            *maxStreams,

					MaxWatchersPerCaller: *perCaller,
					MaxWatchers:          *watchers,
				})
				if err != nil {
					return fmt.Errorf("start control plane: %w", err)
				}
				cred, err := filepath.Abs(srv.AdminCredentialFile())
				if err != nil {
					cred = srv.AdminCredentialFile()
				}
				log.Info("control plane ready; stop with Ctrl-C", "addr", srv.Addr(), "admin_credential", cred,
					"hint", "export "+controlPlaneEnv+"="+srv.Addr()+" "+credentialEnv+"="+cred)
				return serveUntil(ctx, srv)
			}
		},
	}
}
