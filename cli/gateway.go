package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/gateway/sshca"
	"github.com/outposthq/outpost/internal/signature"
	"github.com/outposthq/outpost/internal/telemetry"
)

func gatewayCommand() *command {
	return &command{
		name:  "gateway",
		short: "run a gateway: deploys to the nodes of one datacenter over SSH",
		usage: "outpost gateway --controlplane ADDR --join-token TOKEN --ssh-key FILE --known-hosts FILE [flags]",
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

The cache keeps artifacts for later rollouts and as the bases of delta
uploads, up to --artifact-cache-size in all (default 20GiB; 0 is refused):
the least recently used artifact that no deployment is using goes first.
An artifact in use is never removed, so the cache may exceed its limit
while it is deployed; one larger than the limit is still deployed, then
removed when its last deployment ends (the log warns). The cache survives
restarts, and a smaller limit applies at the next start.

With several control plane replicas, give all of them, comma-separated:
--controlplane cp-1:7443,cp-2:7443,cp-3:7443. The gateway finds the leader
among them, and the next leader after a failover.

Host keys are always verified: against the keys pinned on the node in the
inventory (outpost node scan, then outpost node trust), else against
--known-hosts (which may hold @cert-authority lines). An unknown or
changed host key fails that node.

The connection to the control plane is TLS with a client certificate
bound to this gateway's name and datacenter. The first start joins with a
single-use token (an admin runs: outpost token create --datacenter NAME)
and writes the certificate, key and the control plane's CA to
--credential-file; later starts use that file, and the gateway renews the
certificate before it expires. The token decides the datacenter; give
--datacenter too to have it checked. Prefer --join-token-file or
$OUTPOST_JOIN_TOKEN to --join-token, which other users can see in ps.

Instead of a static deploy key, a gateway may hold its datacenter's SSH
user CA (--ssh-ca-key, the same file on every gateway of the datacenter;
create it with ssh-keygen -t ed25519 -f outpost_user_ca, mode 0600). For
each node deployment it then makes a fresh key pair, in memory only, and
a certificate for the node's login that expires after --ssh-cert-validity
(which also limits how long the deployment may run), may be used only
from this gateway's addresses (--ssh-cert-source-address to name them,
e.g. behind NAT), allows no pty or forwarding, and whose key id names the
rollout, node, assignment and gateway, which sshd logs with the login.
Nodes trust the CA with two sshd_config lines:
  TrustedUserCAKeys /etc/ssh/outpost_user_ca.pub
  LogLevel VERBOSE

Signed artifacts: with --trusted-keys FILE (YAML: keys: [{id, public_key}],
the PEM public keys of your build system's cosign key pairs) the gateway
verifies each artifact's Sigstore bundle with its own keys before it dials
a node, whatever the control plane verified, and refuses the node
deployment when the signature is missing, made for other bytes or by a
key it does not trust: a control plane that was broken into cannot push
unsigned code into this segment. --require-signature=false accepts
unsigned artifacts but still verifies the signatures given.

Examples:
  outpost gateway --controlplane cp.example.internal:7443 --join-token-file /etc/outpost/gateway/join-token \
      --ssh-key /etc/outpost/gateway/id_ed25519 --known-hosts /etc/outpost/gateway/known_hosts \
      --trusted-keys /etc/outpost/gateway/trusted-keys.yaml
  outpost gateway --controlplane 127.0.0.1:7443 --datacenter dc-1 --ssh-agent \
      --known-hosts ~/.ssh/known_hosts --ssh-user deploy --concurrency 50 \
      --cache-dir /var/cache/outpost --artifact-cache-size 50GiB
  outpost gateway --controlplane cp.example.internal:7443 --ssh-user deploy \
      --ssh-ca-key /etc/outpost/gateway/outpost_user_ca --ssh-cert-validity 2h \
      --ssh-cert-source-address 10.20.0.5,10.20.0.6 --known-hosts /etc/outpost/gateway/known_hosts

See deploy/systemd/outpost-gateway.service for a systemd unit.`,
		sub: []*command{gatewayListCommand()},
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			cpDefault := defaultControlPlane
			if v := env.Getenv(controlPlaneEnv); v != "" {
				cpDefault = v
			}
			cp := fs.String("controlplane", cpDefault, "control plane gRPC address `host:port`, or several replicas' comma-separated (env "+controlPlaneEnv+")")
			dc := fs.String("datacenter", "", "`name` of the datacenter whose nodes this gateway deploys; empty: the join token's")
			name := fs.String("name", "", "gateway name shown in rollouts; empty: the credential's, else, when joining, HOSTNAME-DATACENTER (HOSTNAME alone if --datacenter is not given, since the datacenter then comes from the join token)")
			credFile := fs.String("credential-file", defaultGatewayCredential(), "`FILE` holding the gateway's certificate and key (written when joining, renewed in place)")
			joinToken := fs.String("join-token", env.Getenv(joinTokenEnv), "single-use join `TOKEN` from outpost token create (env "+joinTokenEnv+"); only needed until --credential-file exists")
			joinTokenFile := fs.String("join-token-file", "", "read the join token from `FILE`")
			var keys, knownHosts stringList
			fs.Var(&keys, "ssh-key", "unencrypted SSH private key `FILE`; repeatable (FILE-cert.pub next to it is used as a certificate)")
			fs.Var(&knownHosts, "known-hosts", "OpenSSH known_hosts `FILE` for nodes without pinned host keys; repeatable; must exist (an empty file when every node has pinned keys)")
			user := fs.String("ssh-user", "", "SSH login for nodes whose inventory entry has no user")
			agent := fs.Bool("ssh-agent", false, "also offer the keys of the ssh-agent at $SSH_AUTH_SOCK (for encrypted keys)")
			passwordFile := fs.String("ssh-password-file", "", "`FILE` holding the SSH password for legacy nodes without keys")
			caKey := fs.String("ssh-ca-key", "", "SSH user CA private key `FILE` (mode 0600): log in to each node with a fresh certificate per deployment instead of a static key")
			certValidity := fs.Duration("ssh-cert-validity", 0, "how long each deployment's certificate is valid, and so how long the deployment may run (`DURATION`, 5m..24h; 0 = 1h); needs --ssh-ca-key")
			certSources := fs.String("ssh-cert-source-address", "", "comma-separated `CIDR`s or addresses the certificates may be used from (their source-address); empty: this host's non-loopback addresses, and loopback for nodes on loopback")
			bindAddr := fs.String("ssh-bind-address", "", "local `IP` to connect to nodes from (like ssh -b); empty: the system's choice")
			concurrency := fs.Int("concurrency", gateway.DefaultConcurrency, "nodes deployed at once")
			handshakes := fs.Int("max-handshakes", 0, "SSH connection set-ups at once across all nodes (0 = 32), so a large batch does not trip the servers' MaxStartups")
			cacheDir := fs.String("cache-dir", defaultCacheDir(), "artifact cache `directory`")
			cacheSize := newCacheSizeFlag()
			fs.Var(cacheSize, "artifact-cache-size", "bound on the artifacts kept in --cache-dir (`SIZE`: 20GiB, 500MB, bytes); the least recently used not being deployed goes first")
			metrics := fs.String("metrics-listen", "", "serve Prometheus /metrics on this `address` (e.g. 127.0.0.1:9465); empty: off")
			otelEndpoint := fs.String("otel-endpoint", "", otelEndpointHelp)
			trustedKeys := fs.String("trusted-keys", "", "YAML `FILE` of the named public keys whose artifact signatures this gateway accepts (keys: [{id, public_key}]); empty: none")
			requireSig := fs.Bool("require-signature", true, "with --trusted-keys, refuse every artifact not signed by one of them; false verifies only the signatures given")
			logs := addLogFlags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("gateway takes no arguments")
				}
				if len(keys) == 0 && !*agent && *passwordFile == "" && *caKey == "" {
					return usagef("no SSH credentials: give --ssh-ca-key, --ssh-key, --ssh-agent or --ssh-password-file")
				}
				sources, err := certSourceAddresses(*caKey, *certValidity, *certSources)
				if err != nil {
					return err
				}
				if *credFile == "" {
					return usagef("--credential-file is empty")
				}
				if err := checkKnownHosts(knownHosts); err != nil {
					return err

				}
				var trust *signature.Trust
				if *trustedKeys != "" {
					t, err := signature.LoadTrustFile(*trustedKeys)
					if err != nil {
						return err
					}
					trust = t
				} else if flagSet(fs, "require-signature") && *requireSig {
					return usagef("--require-signature needs --trusted-keys FILE")
				}
				token := strings.TrimSpace(*joinToken)
				if *joinTokenFile != "" {
					b, err := os.ReadFile(*joinTokenFile)
					if err != nil {
						return fmt.Errorf("join token: %w", err)
					}
					token = strings.TrimSpace(string(b))
				}
				if _, err := os.Stat(*credFile); token == "" && errors.Is(err, iofs.ErrNotExist) {
					return usagef("no credential at %s: give --join-token-file or --join-token (an admin creates one: outpost token create --datacenter NAME)", *credFile)
				}
				log, err := logs.logger(env.Stderr)
				if err != nil {
					return err
				}
				tp, stopTracing, err := tracing(ctx, telemetry.Service{Name: telemetry.ServiceGateway, InstanceID: *name}, *otelEndpoint, log)
				if err != nil {
					return err
				}
				defer func() {
					sctx, cancel := shutdownContext()
					defer cancel()
					stopTracing(sctx)
				}()
				g, err := gateway.New(gateway.Config{
					ControlPlane:   *cp,
					Name:           *name,
					Datacenter:     *dc,
					CredentialFile: *credFile,
					JoinToken:      token,
					Concurrency:    *concurrency,
					CacheDir:       *cacheDir,
					CacheMaxBytes:  int64(*cacheSize),
					SSH: gateway.SSHConfig{
						User:                *user,
						KeyFiles:            keys,
						Agent:               *agent,
						PasswordFile:        *passwordFile,
						KnownHostsFiles:     knownHosts,
						MaxHandshakes:       *handshakes,
						CAKeyFile:           *caKey,
						CertValidity:        *certValidity,
						CertSourceAddresses: sources,
						LocalAddr:           *bindAddr,
					},
					MetricsListen:    *metrics,
					Logger:           log,
					TracerProvider:   tp,
					Version:          buildVersion().Short(),
					TrustedKeys:      trust,
					RequireSignature: trust != nil && *requireSig,
				})
				if err != nil {
					return err
				}
				log.Info("gateway starting", "controlplane", *cp, "name", g.Name(), "datacenter", g.Datacenter(), "credential", *credFile, "cache_dir", *cacheDir, "artifact_cache_size", cacheSize.String(),
					"trusted_signers", strings.Join(trust.IDs(), ","), "require_signature", trust != nil && *requireSig)
				if err := g.Run(ctx); err != nil {
					return err
				}
				log.Info("gateway stopped")
				return nil
			}
		},
	}
}

// certSourceAddresses checks the certificate flags and parses
// --ssh-cert-source-address; nil means the default.
func certSourceAddresses(caKey string, validity time.Duration, sources string) ([]netip.Prefix, error) {
	if caKey == "" {
		if validity != 0 || sources != "" {
			return nil, usagef("--ssh-cert-validity and --ssh-cert-source-address need --ssh-ca-key")
		}
		return nil, nil
	}
	if validity != 0 && (validity < sshca.MinValidity || validity > sshca.MaxValidity) {
		return nil, usagef("--ssh-cert-validity %v is outside %v..%v", validity, sshca.MinValidity, sshca.MaxValidity)
	}
	if sources == "" {
		return nil, nil
	}
	p, err := sshca.ParseSourceAddresses(sources)
	if err != nil {
		return nil, usagef("--ssh-cert-source-address: %v", err)
	}
	return p, nil
}

// checkKnownHosts refuses a --known-hosts file that does not exist, and
// says how to make one. The gateway does not create it, unlike ssh: a
// misspelt path would then silently verify nothing.
func checkKnownHosts(files []string) error {
	for _, f := range files {
		_, err := os.Stat(f)
		if errors.Is(err, iofs.ErrNotExist) {
			return usagef("--known-hosts %s: no such file. Create it with the nodes' host keys, checked out of band "+
				"(ssh-keyscan -H HOST >> %s), or empty (touch %s) if every node has pinned host keys (outpost node scan, outpost node trust)", f, f, f)
		}
		if err != nil {
			return fmt.Errorf("--known-hosts: %w", err)
		}
	}
	return nil
}

// joinTokenEnv passes the join token without putting it on the command line.
const joinTokenEnv = "OUTPOST_JOIN_TOKEN"

// defaultGatewayCredential is in the user's config directory, or a
// relative one when there is none.
func defaultGatewayCredential() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "outpost", "gateway.pem")
	}
	return filepath.Join(".outpost", "gateway.pem")
}

// defaultCacheDir is the user's cache directory, or a relative one when
// there is none (no $HOME, as under some service managers).
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "outpost", "gateway")
	}
	return filepath.Join(".outpost", "cache")
}
