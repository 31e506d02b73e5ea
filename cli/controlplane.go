package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/rollout"
)

func controlplaneCommand() *command {
	return &command{
		name:  "controlplane",
		short: "run the control plane: the API, the rollout engine and the state store",
		usage: "outpost controlplane [--listen ADDR] [--data-dir DIR] [--etcd-endpoints URLS] [flags]",
		long: `Runs a control plane until interrupted (SIGINT or SIGTERM), then shuts
down gracefully: rollouts keep their state and continue when a control
plane runs again.

The control plane serves the gRPC API that the outpost client verbs,
grpcurl (server reflection is on) and the gateways use, and runs the
rollout engine. Its state lives in etcd: by default an embedded single-node
etcd in --data-dir (nothing else to install), or an external etcd cluster
with --etcd-endpoints, in which case several control planes may run: one
leads and drives rollouts, the others serve and take over when it dies.
Uploaded artifacts are stored in --data-dir/artifacts (or --artifact-dir),
never in etcd; replicas sharing an etcd cluster must share that directory.
When the leader dies, another replica takes over within --leader-ttl
(default 10s) and continues every running rollout.

Transport is plaintext gRPC for now: listen on loopback or a trusted
network only.

Examples:
  outpost controlplane
  outpost controlplane --listen 0.0.0.0:7443 --data-dir /var/lib/outpost --metrics-listen 127.0.0.1:9464
  outpost controlplane --etcd-endpoints http://etcd-1:2379,http://etcd-2:2379,http://etcd-3:2379 \
      --data-dir /var/lib/outpost --otel-endpoint 127.0.0.1:4317

See deploy/systemd/outpost-controlplane.service for a systemd unit.`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			listen := fs.String("listen", controlplane.DefaultListen, "gRPC `address` to serve on (port 0 picks a free port)")
			dataDir := fs.String("data-dir", ".outpost/controlplane", "`directory` for the embedded etcd and the artifact store")
			var etcd stringList
			fs.Var(&etcd, "etcd-endpoints", "external etcd client `URLs`, comma-separated; empty: embedded etcd in --data-dir")
			metrics := fs.String("metrics-listen", "", "serve Prometheus /metrics on this `address` (e.g. 127.0.0.1:9464); empty: off")
			otelEndpoint := fs.String("otel-endpoint", "", otelEndpointHelp)
			replica := fs.String("name", "", "replica name in leader election and logs; empty: the host name")
			artifactDir := fs.String("artifact-dir", "", "artifact store `directory`; empty: DATA-DIR/artifacts. Replicas sharing an etcd cluster must share it (a shared volume)")
			leaderTTL := fs.Duration("leader-ttl", leader.DefaultTTL, "leader lease `TTL` (whole seconds): a dead leader is replaced within about this long")
			gatewayGrace := fs.Duration("gateway-grace", rollout.DefaultOrphanGrace, "how long the nodes of a disconnected gateway wait for it before they go to another gateway of the datacenter")
			logs := addLogFlags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("controlplane takes no arguments")
				}
				log, err := logs.logger(env.Stderr)
				if err != nil {
					return err
				}
				tp, stopTracing, err := tracing(ctx, "outpost-controlplane", *otelEndpoint, log)
				if err != nil {
					return err
				}
				defer func() {
					sctx, cancel := shutdownContext()
					defer cancel()
					stopTracing(sctx)
				}()
				srv, err := controlplane.Start(ctx, controlplane.Config{
					Listen:         *listen,
					DataDir:        *dataDir,
					EtcdEndpoints:  etcd,
					MetricsListen:  *metrics,
					ReplicaName:    *replica,
					ArtifactDir:    *artifactDir,
					LeaderTTL:      *leaderTTL,
					GatewayGrace:   *gatewayGrace,
					Logger:         log,
					TracerProvider: tp,
				})
				if err != nil {
					return fmt.Errorf("start control plane: %w", err)
				}
				log.Info("control plane ready; stop with Ctrl-C", "addr", srv.Addr(),
					"hint", "export "+controlPlaneEnv+"="+srv.Addr())
				<-ctx.Done()
				sctx, cancel := shutdownContext()
				defer cancel()
				return srv.Shutdown(sctx)
			}
		},
	}
}
