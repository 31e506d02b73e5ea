package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The simulated service's conventions (internal/simfleet): where it is
// deployed, relative to each fleet host's home, and its health port.
const (
	devDeployPath = "app"
	devHealthPort = 18080
)

func devCommand() *command {
	return &command{
		name:  "dev",
		short: "run everything on this machine with a simulated fleet (try Outpost here)",
		usage: "outpost dev [--nodes N] [--datacenters N] [--data-dir DIR] [--listen ADDR] [--metrics-listen HOST:PORT]",
		long: `Runs a whole Outpost on this machine until interrupted (SIGINT or
SIGTERM): a simulated fleet of SSH servers, a control plane with embedded
etcd, and one gateway per datacenter. Nothing is installed and no root is
needed.

The fleet's servers are real SSH/SFTP servers inside this process, each on
its own loopback address (127.x.y.z, port 2222) with its own host key and
home directory under DATA/dev/fleet, and an HTTP health endpoint on port
18080 that reports the simulated service healthy when its running release
is a healthy one. Commands sent to them really run, as your user.

When everything is up it prints "outpost dev: ready" and writes, under
DATA/dev/:
  nodes.yaml          the fleet's inventory (ids node-01..., app=demo, tier)
  id_ed25519          the gateways' SSH key (fresh each run)
  known_hosts         the fleet's host keys
  demo/app-v1.tar.gz, app-v2.tar.gz   healthy releases of the demo app
  demo/app-v3.tar.gz  a broken release: it starts, but its health check fails
  demo/plan-v1.yaml, plan-v2.yaml, plan-v3.yaml   rolling plans, batch 5

Connections are TLS: the control plane writes its admin credential to
DATA/admin.pem, and each gateway joins with a join token and keeps its
credential under DATA/dev/gateways. Client verbs run from the directory
where 'outpost dev' was started find DATA/admin.pem by themselves (for the
default --data-dir); elsewhere, export OUTPOST_CREDENTIAL as printed.

Then, in another terminal:
  export OUTPOST_CONTROLPLANE=127.0.0.1:7443
  export OUTPOST_CREDENTIAL=DATA/admin.pem
  outpost node apply -f DATA/dev/nodes.yaml
  outpost rollout create -f DATA/dev/demo/plan-v1.yaml --watch
  outpost rollout create -f DATA/dev/demo/plan-v3.yaml --watch   # rolled back, aborted

With --metrics-listen HOST:PORT the control plane serves Prometheus
/metrics on HOST:PORT and the gateway of dc-N on HOST:PORT+N (port 0: each
on a free port, shown in the log). deploy/prometheus and deploy/grafana
hold alerting rules and a dashboard for them.

The control plane's state persists in DATA between runs; delete DATA to
start over. 'make demo' runs this whole story unattended.

Examples:
  outpost dev
  outpost dev --nodes 200 --datacenters 3 --data-dir /tmp/outpost-dev --listen 127.0.0.1:7543
  outpost dev --metrics-listen 127.0.0.1:9464   # gateways on :9465, :9466`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			nodes := fs.Int("nodes", 20, "simulated servers in the fleet")
			dcs := fs.Int("datacenters", 2, "datacenters dc-1..dc-N the nodes are spread over, one gateway each")
			dataDir := fs.String("data-dir", filepath.Join(".outpost", "dev"), "`directory` for the control plane's state and the dev files")
			listen := fs.String("listen", controlplane.DefaultListen, "control plane gRPC `address`")
			otelEndpoint := fs.String("otel-endpoint", "", otelEndpointHelp)
			metrics := fs.String("metrics-listen", "", "serve Prometheus /metrics: the control plane on `HOST:PORT`, the gateway of dc-N on PORT+N; empty: off")
			logs := addLogFlags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("dev takes no arguments")
				}
				if *nodes < 1 || *nodes > 10000 {
					return usagef("--nodes %d: want 1..10000", *nodes)
				}
				if *dcs < 1 || *dcs > *nodes {
					return usagef("--datacenters %d: want 1..%d (at most one per node)", *dcs, *nodes)
				}
				cpMetrics, gwMetrics, err := devMetricsAddrs(*metrics, *dcs)
				if err != nil {
					return usagef("--metrics-listen: %v", err)
				}
				log, err := logs.logger(env.Stderr)
				if err != nil {
					return err
				}
				data, err := filepath.Abs(*dataDir)
				if err != nil {
					return err
				}
				// A provider per daemon, as in production: each exports under
				// its own service name (outpost-controlplane, outpost-gateway).
				if err := telemetry.CheckEndpoint(*otelEndpoint); err != nil {
					return usagef("--otel-endpoint: %v", err)
				}
				var stopTracing []func(context.Context) error
				defer func() {
					sctx, cancel := shutdownContext()
					defer cancel()
					for _, stop := range stopTracing {
						stop(sctx)
					}
				}()
				tracer := func(svc telemetry.Service) trace.TracerProvider {
					tp, stop, err := tracing(ctx, svc, *otelEndpoint, log)
					if err != nil {
						return noop.NewTracerProvider() // the endpoint was checked above
					}
					stopTracing = append(stopTracing, stop)
					return tp
				}
				return runDev(ctx, devConfig{nodes: *nodes, datacenters: *dcs, dataDir: data, listen: *listen,
					metricsListen: cpMetrics, gatewayMetricsListen: gwMetrics, log: log, tracer: tracer, out: env.Stdout})
			}
		},
	}
}

type devConfig struct {
	nodes, datacenters int
	dataDir            string // absolute
	listen             string
	// metricsListen is the control plane's /metrics address and
	// gatewayMetricsListen[i] that of the gateway of dc-(i+1); "" and nil:
	// no metrics.
	metricsListen        string
	gatewayMetricsListen []string
	log                  *slog.Logger
	tracer               func(telemetry.Service) trace.TracerProvider // a daemon's provider
	out                  io.Writer                                    // instructions and the ready line
}

// runDev starts the fleet, the control plane and the gateways, writes the
// dev files, and runs until ctx ends; then it stops everything in reverse
// order (gateways first, so no deployment is cut off by a vanished
// control plane or fleet).
func runDev(ctx context.Context, cfg devConfig) (err error) {
	devDir := filepath.Join(cfg.dataDir, "dev")
	demoDir := filepath.Join(devDir, "demo")
	for _, d := range []string{devDir, demoDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// Undo what started, newest first, however runDev ends.
	var stops []func(context.Context) error
	defer func() {
		sctx, cancel := shutdownContext()
		defer cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			if serr := stops[i](sctx); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()

	keyPath := filepath.Join(devDir, "id_ed25519")
	pub, err := writeClientKey(keyPath)
	if err != nil {
		return err
	}
	fleet, err := simfleet.Start(ctx, simfleet.Config{
		Hosts:       cfg.nodes,
		Dir:         filepath.Join(devDir, "fleet"),
		ClientKeys:  []ssh.PublicKey{pub},
		HealthPort:  devHealthPort,
		ServicePath: devDeployPath,
		NamePrefix:  "host-",
		Logger:      cfg.log.With("component", "fleet"),
	})
	if err != nil {
		return fmt.Errorf("start the simulated fleet: %w", err)
	}
	stops = append(stops, func(context.Context) error { return fleet.Close() })
	knownHosts := filepath.Join(devDir, "known_hosts")
	if err := fleet.WriteKnownHosts(knownHosts); err != nil {
		return err
	}
	cfg.log.Info("simulated fleet running", "nodes", cfg.nodes, "dir", filepath.Join(devDir, "fleet"))

	cp, err := controlplane.Start(ctx, controlplane.Config{
		Listen:         cfg.listen,
		DataDir:        cfg.dataDir,
		ReplicaName:    "dev",
		MetricsListen:  cfg.metricsListen,
		Logger:         cfg.log,
		TracerProvider: cfg.tracer(telemetry.Service{Name: telemetry.ServiceControlPlane, InstanceID: "dev"}),
	})
	if err != nil {
		return fmt.Errorf("start the control plane (is another `outpost dev` or control plane using %s or %s? try --listen, --data-dir): %w",
			cfg.listen, cfg.dataDir, err)
	}
	stops = append(stops, cp.Shutdown)

	tokens, err := devJoinTokens(ctx, cp, devDir, cfg.datacenters)
	if err != nil {
		return err
	}

	login := currentUser()
	gctx, stopGateways := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stops = append(stops, func(context.Context) error {
		stopGateways()
		wg.Wait()
		return nil
	})
	for i := 1; i <= cfg.datacenters; i++ {
		dc := fmt.Sprintf("dc-%d", i)
		metricsListen := ""
		if cfg.gatewayMetricsListen != nil {
			metricsListen = cfg.gatewayMetricsListen[i-1]
		}
		g, err := gateway.New(gateway.Config{
			MetricsListen:  metricsListen,
			ControlPlane:   cp.Addr(),
			Name:           devGatewayName(dc),
			Datacenter:     dc,
			CredentialFile: devGatewayCredential(devDir, dc),
			JoinToken:      tokens[dc],
			CacheDir:       filepath.Join(devDir, "cache", dc),
			SSH:            gateway.SSHConfig{User: login, KeyFiles: []string{keyPath}, KnownHostsFiles: []string{knownHosts}},
			Logger:         cfg.log,
			TracerProvider: cfg.tracer(telemetry.Service{Name: telemetry.ServiceGateway, InstanceID: devGatewayName(dc)}),
			Version:        buildVersion().Short(),
		})
		if err != nil {
			return fmt.Errorf("gateway for %s: %w", dc, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Run(gctx); err != nil {
				cfg.log.Error("gateway stopped", "datacenter", dc, "err", err)
			}
		}()
	}

	inventory := filepath.Join(devDir, "nodes.yaml")
	if err := os.WriteFile(inventory, devInventory(fleet.Hosts(), cfg.datacenters, login), 0o644); err != nil {
		return err
	}
	plans, err := writeDemo(demoDir)
	if err != nil {
		return err
	}

	fmt.Fprintf(cfg.out, `outpost dev: %d simulated nodes in %d datacenters, one gateway each; control plane at %s
  data:       %s
  inventory:  %s
  demo plans: %s

In another terminal:
  export %s=%s
  export %s=%s
  outpost node apply -f %s
  outpost rollout create -f %s --watch
  outpost rollout create -f %s --watch
  outpost rollout create -f %s --watch   # broken: fails health, rolled back, aborted
  outpost rollout list

Stop with Ctrl-C.
outpost dev: ready
`, cfg.nodes, cfg.datacenters, cp.Addr(), cfg.dataDir, inventory, demoDir,
		controlPlaneEnv, cp.Addr(), credentialEnv, cp.AdminCredentialFile(), inventory, plans[0], plans[1], plans[2])

	return devUntil(ctx, cp, cfg.out)
}

// devUntil waits until ctx ends (an interrupt: nil) or the embedded
// control plane fails by itself: then its failure, so that `outpost dev`
// exits non-zero instead of serving a fleet that nothing drives. runDev's
// deferred stops shut everything down either way.
func devUntil(ctx context.Context, cp runningServer, out io.Writer) error {
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "outpost dev: stopping")
		return nil
	case <-cp.Done():
	}
	err := cp.Err()
	if err == nil {
		err = errors.New("the control plane stopped by itself")
	}
	fmt.Fprintln(out, "outpost dev: the control plane failed; stopping")
	// The server logged its failure as it happened.
	return &exitError{code: 1, err: fmt.Errorf("outpost dev: %w", err), logged: true}
}

// devMetricsAddrs splits --metrics-listen HOST:PORT into the control
// plane's address (HOST:PORT) and the gateways' (HOST:PORT+1 ...
// HOST:PORT+gateways); with port 0 each is HOST:0, a free port. An empty
// listen means no metrics: "", nil.
func devMetricsAddrs(listen string, gateways int) (cp string, gws []string, err error) {
	if listen == "" {
		return "", nil, nil
	}
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return "", nil, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return "", nil, fmt.Errorf("port %q: want 0..65535", portText)
	}
	if port != 0 && port+gateways > 65535 {
		return "", nil, fmt.Errorf("port %d: the gateways need %d ports after it, beyond 65535", port, gateways)
	}
	for i := 1; i <= gateways; i++ {
		p := 0
		if port != 0 {
			p = port + i
		}
		gws = append(gws, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	return listen, gws, nil
}

// devGatewayName names the dev gateway of dc.
func devGatewayName(dc string) string { return "dev-gateway-" + dc }

// devGatewayCredential is where the dev gateway of dc keeps its credential.
func devGatewayCredential(devDir, dc string) string {
	return filepath.Join(devDir, "gateways", devGatewayName(dc)+".pem")
}

// devJoinTokens creates, as the admin, a join token for each dev gateway
// that has no usable credential of this control plane yet, by datacenter.
func devJoinTokens(ctx context.Context, cp *controlplane.Server, devDir string, datacenters int) (map[string]string, error) {
	admin, err := pki.LoadCredential(cp.AdminCredentialFile())
	if err != nil {
		return nil, err
	}
	conn, err := enroll.Dial(cp.Addr(), admin)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tokens := map[string]string{}
	for i := 1; i <= datacenters; i++ {
		dc := fmt.Sprintf("dc-%d", i)
		path := devGatewayCredential(devDir, dc)
		if cred, err := pki.LoadCredential(path); err == nil && time.Now().Before(cred.RenewAt()) && bytes.Equal(cred.CAPEM, admin.CAPEM) {
			continue
		}
		// A credential of an older control plane (its data deleted) or an
		// expired one is replaced.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := outpostv1.NewAdminServiceClient(conn).CreateJoinToken(cctx, &outpostv1.CreateJoinTokenRequest{
			Datacenter: dc, GatewayName: devGatewayName(dc), Ttl: durationpb.New(10 * time.Minute),
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join token for the %s gateway: %w", dc, err)
		}
		tokens[dc] = resp.GetToken()
	}
	return tokens, nil
}

// writeClientKey writes a fresh ed25519 key for the gateways (0600) and
// returns its public half for the fleet.
func writeClientKey(path string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "outpost dev gateway")
	if err != nil {
		return nil, err
	}
	// Remove first: WriteFile keeps the mode of an existing file.
	os.Remove(path)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("write client key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(sshPub), 0o644); err != nil {
		return nil, fmt.Errorf("write client key: %w", err)
	}
	return sshPub, nil
}

// currentUser is the login written into the inventory: the fleet accepts
// any name, and the current user's is the honest one.
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "outpost"
}

// devInventory lists the fleet as nodes node-01.. spread round-robin over
// dc-1..dc-N, labelled app=demo and a tier (1, 2, 3 in turn).
func devInventory(hosts []*simfleet.Host, datacenters int, login string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Inventory of the `outpost dev` fleet: %d simulated servers in %d datacenters.\n", len(hosts), datacenters)
	fmt.Fprintf(&b, "# Apply it with: outpost node apply -f %s\n", "nodes.yaml")
	fmt.Fprintf(&b, "# Addresses change on every run of `outpost dev`; apply the new file each time.\n")
	b.WriteString("nodes:\n")
	width := max(2, len(fmt.Sprint(len(hosts))))
	for i, h := range hosts {
		fmt.Fprintf(&b, "  - {id: node-%0*d, address: %q, datacenter: dc-%d, user: %q, labels: {app: demo, tier: \"%d\"}}\n",
			width, i+1, h.Addr, i%datacenters+1, login, i%3+1)
	}
	return []byte(b.String())
}

// demoRelease is one release of the demo app.
type demoRelease struct {
	version string
	healthy bool
	comment string
}

var demoReleases = []demoRelease{
	{"v1", true, "the first release of the demo app; healthy"},
	{"v2", true, "the next release; healthy"},
	{"v3", false, "a broken release: it starts, but /health answers 503, so the first\n# batch fails its health check, is rolled back to v2, and the rollout aborts\n# (more failed nodes than max_fail_percent allows)"},
}

// writeDemo builds the demo artifacts and writes their plans; it returns
// the plans' paths.
func writeDemo(dir string) ([]string, error) {
	var plans []string
	for _, r := range demoReleases {
		rel, err := simfleet.BuildRelease(dir, r.version, r.healthy)
		if err != nil {
			return nil, err
		}
		artifact := "app-" + r.version + ".tar.gz"
		if err := os.Rename(rel.Path, filepath.Join(dir, artifact)); err != nil {
			return nil, err
		}
		plan := fmt.Sprintf(`# Demo plan %[1]s: %[2]s.
# Deploy it with: outpost rollout create -f plan-%[1]s.yaml --watch
app: demo
change_id: DEMO-%[1]s
artifact:
  path: %[3]s            # relative to this file
targets:
  selector: {app: demo}
deploy:
  path: %[4]s                        # relative to the SSH user's home
hooks:
  stop: sh bin/stop
  start: sh bin/start
health:
  http: {port: %[5]d, path: /health}
  timeout: 5s
  interval: 500ms
strategy:
  type: rolling
  batch: 5
  max_fail_percent: 10
`, r.version, r.comment, artifact, devDeployPath, devHealthPort)
		path := filepath.Join(dir, "plan-"+r.version+".yaml")
		if err := os.WriteFile(path, []byte(plan), 0o644); err != nil {
			return nil, err
		}
		plans = append(plans, path)
	}
	return plans, nil
}
