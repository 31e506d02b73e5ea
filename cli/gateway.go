package cli

import (
	"context"
	"flag"
	"os"
	"path/filepath"

	"github.com/outposthq/outpost/gateway"
)

func gatewayCommand() *command {
	return &command{
		name:  "gateway",
		short: "run a gateway: deploys to the nodes of one datacenter over SSH",
		usage: "outpost gateway --controlplane ADDR --datacenter NAME --ssh-key FILE --known-hosts FILE [flags]",
		long: `Runs a gateway until interrupted (SIGINT or SIGTERM). Run one or more per
datacenter or network segment, next to its servers.

The gateway dials OUT to the control plane and holds a stream to it, so
nothing needs to connect into the datacenter. The control plane sends it
batches of nodes of its datacenter; it deploys each node over SSH/SFTP,
at most --concurrency at once, and streams every step back. It fetches
each artifact once into --cache-dir and fans it out to the nodes. SSH keys,
passwords and known_hosts stay on this machine; the control plane never
sees them. If the control plane goes away, the gateway keeps retrying with
backoff. On shutdown it finishes the nodes it is switching (never leaving
a node half-switched) and cancels the rest.

With several control plane replicas, give all of them, comma-separated:
--controlplane cp-1:7443,cp-2:7443,cp-3:7443. The gateway finds the leader
among them, and the next leader after a failover.

Host keys are always verified: against the keys pinned on the node in the
inventory, else against --known-hosts (which may hold @cert-authority
lines). An unknown or changed host key fails that node.

Examples:
  outpost gateway --controlplane cp.example.internal:7443 --datacenter seoul-1 \
      --ssh-key /etc/outpost/gateway/id_ed25519 --known-hosts /etc/outpost/gateway/known_hosts
  outpost gateway --controlplane 127.0.0.1:7443 --datacenter dc-1 --ssh-agent \
      --known-hosts ~/.ssh/known_hosts --ssh-user deploy --concurrency 50

See deploy/systemd/outpost-gateway.service for a systemd unit.`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			cp := controlPlaneFlag(fs, env)
			dc := fs.String("datacenter", "", "`name` of the datacenter whose nodes this gateway deploys (required)")
			name := fs.String("name", "", "gateway name shown in rollouts; empty: HOSTNAME-DATACENTER")
			var keys, knownHosts stringList
			fs.Var(&keys, "ssh-key", "unencrypted SSH private key `FILE`; repeatable (FILE-cert.pub next to it is used as a certificate)")
			fs.Var(&knownHosts, "known-hosts", "OpenSSH known_hosts `FILE` for nodes without pinned host keys; repeatable")
			user := fs.String("ssh-user", "", "SSH login for nodes whose inventory entry has no user")
			agent := fs.Bool("ssh-agent", false, "also offer the keys of the ssh-agent at $SSH_AUTH_SOCK (for encrypted keys)")
			passwordFile := fs.String("ssh-password-file", "", "`FILE` holding the SSH password for legacy nodes without keys")
			concurrency := fs.Int("concurrency", gateway.DefaultConcurrency, "nodes deployed at once")
			cacheDir := fs.String("cache-dir", defaultCacheDir(), "artifact cache `directory`")
			metrics := fs.String("metrics-listen", "", "serve Prometheus /metrics on this `address` (e.g. 127.0.0.1:9465); empty: off")
			otelEndpoint := fs.String("otel-endpoint", "", otelEndpointHelp)
			logs := addLogFlags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("gateway takes no arguments")
				}
				if *dc == "" {
					return usagef("--datacenter is required")
				}
				if len(keys) == 0 && !*agent && *passwordFile == "" {
					return usagef("no SSH credentials: give --ssh-key, --ssh-agent or --ssh-password-file")
				}
				log, err := logs.logger(env.Stderr)
				if err != nil {
					return err
				}
				tp, stopTracing, err := tracing(ctx, "outpost-gateway", *otelEndpoint, log)
				if err != nil {
					return err
				}
				defer func() {
					sctx, cancel := shutdownContext()
					defer cancel()
					stopTracing(sctx)
				}()
				g, err := gateway.New(gateway.Config{
					ControlPlane: *cp,
					Name:         *name,
					Datacenter:   *dc,
					Concurrency:  *concurrency,
					CacheDir:     *cacheDir,
					SSH: gateway.SSHConfig{
						User:            *user,
						KeyFiles:        keys,
						Agent:           *agent,
						PasswordFile:    *passwordFile,
						KnownHostsFiles: knownHosts,
					},
					MetricsListen:  *metrics,
					Logger:         log,
					TracerProvider: tp,
					Version:        version,
				})
				if err != nil {
					return err
				}
				log.Info("gateway starting", "controlplane", *cp, "datacenter", *dc, "cache_dir", *cacheDir)
				if err := g.Run(ctx); err != nil {
					return err
				}
				log.Info("gateway stopped")
				return nil
			}
		},
	}
}

// defaultCacheDir is the user's cache directory, or a relative one when
// there is none (no $HOME, as under some service managers).
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "outpost", "gateway")
	}
	return filepath.Join(".outpost", "cache")
}
