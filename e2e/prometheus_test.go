package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"sigs.k8s.io/yaml"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/telemetry"
	"github.com/outposthq/outpost/internal/testprometheus"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The scrape jobs, named as deploy/grafana/outpost.json's variables
// default to.
const (
	cpJob = "outpost-controlplane"
	gwJob = "outpost-gateway"
)

// promNodes is the size of the fleet: real sshd processes, alternating
// between dc-a and dc-b; promBadNode (in dc-a) presents the wrong host key.
const (
	promNodes   = 20
	promBadNode = 2
)

// rolloutWait bounds the rollout.
const rolloutWait = 3 * time.Minute

// promWait bounds each wait for Prometheus to show something: a few
// scrapes, and the control plane's rollout count is cached for 10 s.
const promWait = 45 * time.Second

// TestPrometheusSeesARollout runs a control plane and two gateways with
// their metrics endpoints, real sshd nodes in two datacenters (one whose
// host key is not the pinned one, so it fails; promNodes in all), and a real Prometheus
// scraping the daemons; then it asks Prometheus' query API what an
// operator would: rollouts by state, node results by datacenter and state
// (the same on both daemons), step duration buckets, the leader and the
// gateways per datacenter. It also evaluates every query of the shipped
// dashboard and alerting rules on that Prometheus, checks that each metric
// they name is one the daemons export, and runs promtool check metrics on
// both daemons' scrapes.
// startAdminControlPlane starts a lone control plane, stopped when the
// test ends, and dials it with its admin credential.
func startAdminControlPlane(t *testing.T, cfg controlplane.Config) (*controlplane.Server, *e2etest.Client) {
	t.Helper()
	cp, err := controlplane.Start(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		cp.Shutdown(ctx)
	})
	admin, err := pki.LoadCredential(cp.AdminCredentialFile())
	if err != nil {
		t.Fatal(err)
	}
	client, err := e2etest.Dial(cp.Addr(), admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return cp, client
}

func TestPrometheusSeesARollout(t *testing.T) {
	log := testLogger()
	dir := t.TempDir()
	cp, client := startAdminControlPlane(t, controlplane.Config{
		Listen:        "127.0.0.1:0",
		MetricsListen: "127.0.0.1:0",
		DataDir:       filepath.Join(dir, "controlplane"),
		ReplicaName:   "cp-prom",
		Logger:        log.With("component", "controlplane"),
	})

	signer, _ := testsshd.ClientKey(t)
	var inv []*outpostv1.Node
	for i := range promNodes {
		root := filepath.Join(t.TempDir(), "root")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		s := testsshd.Start(t, testsshd.Options{
			AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
			ExtraConfig:    []string{"Subsystem sftp internal-sftp -d " + root},
		})
		hostKey := s.HostKey
		if i == promBadNode {
			_, hostKey = testsshd.ClientKey(t) // any other key
		}
		inv = append(inv, &outpostv1.Node{
			Id:         e2etest.NodeID(i),
			Address:    s.Addr,
			Datacenter: alternateDC(i),
			User:       s.User,
			Labels:     map[string]string{"app": e2etest.App},
			HostKeys:   []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey)))},
		})
	}
	if err := client.Apply(ctxT(t), inv); err != nil {
		t.Fatal(err)
	}
	knownHosts := filepath.Join(dir, "known_hosts") // empty: every key is pinned
	if err := os.WriteFile(knownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	gwMetrics := map[string]string{} // datacenter -> metrics address
	for _, dc := range []string{dcA, dcB} {
		name := "gw-" + dc
		tok, err := client.JoinToken(ctxT(t), name, dc)
		if err != nil {
			t.Fatal(err)
		}
		g, err := gateway.New(gateway.Config{
			ControlPlane:   cp.Addr(),
			Name:           name,
			Datacenter:     dc,
			CredentialFile: filepath.Join(dir, name+".pem"),
			JoinToken:      tok,
			CacheDir:       filepath.Join(dir, "cache-"+dc),
			MetricsListen:  "127.0.0.1:0",
			SSH:            gateway.SSHConfig{Signers: []ssh.Signer{signer}, KnownHostsFiles: []string{knownHosts}},
			Logger:         log.With("component", "gateway", "gateway", name),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(rolloutWait):
				t.Errorf("gateway %s did not stop within %v", name, rolloutWait)
			}
		})
		for i := 0; g.MetricsAddr() == ""; i++ {
			if i == int(waitLimit/pollEvery) {
				t.Fatalf("gateway %s serves no metrics after %v", name, waitLimit)
			}
			time.Sleep(pollEvery)
		}
		gwMetrics[dc] = g.MetricsAddr()
	}

	prom := testprometheus.Start(t, testprometheus.Options{
		ScrapeInterval: time.Second,
		Targets: map[string][]string{
			cpJob: {cp.MetricsAddr()},
			gwJob: {gwMetrics[dcA], gwMetrics[dcB]},
		},
	})
	prom.WaitFor(t, "gateways per datacenter", `sum by (datacenter) (outpost_gateways_connected{job="`+cpJob+`"})`, promWait,
		func(s []testprometheus.Sample) bool { return byLabel(s, "datacenter") == "dc-a=1 dc-b=1" })
	prom.WaitFor(t, "leader", `outpost_leader{job="`+cpJob+`"}`, promWait,
		func(s []testprometheus.Sample) bool { return len(s) == 1 && s[0].Value == 1 })

	rel, err := simfleet.BuildRelease(t.TempDir(), "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := client.Upload(ctxT(t), rel.Path)
	if err != nil {
		t.Fatal(err)
	}
	maxFail := int32(50)
	spec := &outpostv1.PlanSpec{
		App:      e2etest.App,
		Artifact: &outpostv1.PlanArtifact{Path: filepath.Base(rel.Path)},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": e2etest.App}},
		Deploy:   &outpostv1.PlanDeploy{Path: e2etest.DeployPath},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "100%", MaxFailPercent: &maxFail},
	}
	r, err := client.Create(ctxT(t), spec, digest)
	if err != nil {
		t.Fatal(err)
	}
	// Real sshd sessions on a busy machine may take longer than the
	// package's usual wait.
	wctx, cancel := context.WithTimeout(context.Background(), rolloutWait)
	defer cancel()
	done, err := client.Wait(wctx, r.GetId(), pollEvery, func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) })
	if err != nil {
		t.Fatal(err)
	}
	if c := done.GetNodeCounts(); c.GetSucceeded() != promNodes-1 || c.GetFailed() != 1 {
		t.Fatalf("rollout ended %v with %v; want %d succeeded, 1 failed", done.GetState(), c, promNodes-1)
	}
	// One more waits for approval: counted from etcd, not by the engine.
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	if p, err := client.Create(ctxT(t), spec, digest); err != nil || p.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		t.Fatalf("create with approval required: %v, %v", p.GetState(), err)
	}

	finished := telemetry.RolloutStateValue(done.GetState())
	prom.WaitFor(t, "rollouts by state", `outpost_rollouts{job="`+cpJob+`"}`, promWait, func(s []testprometheus.Sample) bool {
		return byLabel(s, "state") == "approved=0 paused=0 pending_approval=1 pending_validation=0 running=0"
	})
	prom.WaitFor(t, "finished rollouts", `outpost_rollouts_finished_total{job="`+cpJob+`"}`, promWait, func(s []testprometheus.Sample) bool {
		return byLabel(s, "state") == finished+"=1"
	})
	// Node results by datacenter and state, the same on both daemons.
	wantNodes := fmt.Sprintf("dc-a,failed=1 dc-a,succeeded=%d dc-b,succeeded=%d", promNodes/2-1, promNodes/2)
	for _, job := range []string{cpJob, gwJob} {
		prom.WaitFor(t, "node results of "+job, `sum by (datacenter, state) (outpost_node_deployments_total{job="`+job+`",app="`+e2etest.App+`"})`, promWait,
			func(s []testprometheus.Sample) bool { return byLabel(s, "datacenter", "state") == wantNodes })
		prom.WaitFor(t, "node deployment durations of "+job, `sum by (datacenter, state) (outpost_node_deployment_duration_seconds_count{job="`+job+`"})`, promWait,
			func(s []testprometheus.Sample) bool { return byLabel(s, "datacenter", "state") == wantNodes })
		// Every bucket of the upload step, with the literal bounds; +Inf
		// counts every node that uploaded.
		var wantLE []string
		for _, b := range telemetry.StepBuckets {
			wantLE = append(wantLE, strconv.FormatFloat(b, 'f', -1, 64))
		}
		wantLE = append(wantLE, "+Inf")
		prom.WaitFor(t, "upload step buckets of "+job, `sum by (le) (outpost_step_duration_seconds_bucket{job="`+job+`",step="upload",result="succeeded"})`, promWait,
			func(s []testprometheus.Sample) bool {
				var les []string
				inf := 0.0
				for _, x := range s {
					les = append(les, x.Metric["le"])
					if x.Metric["le"] == "+Inf" {
						inf = x.Value
					}
				}
				slices.SortFunc(les, func(a, b string) int { return cmpLE(a, b) })
				return slices.Equal(les, wantLE) && inf == promNodes-1
			})
	}
	prom.WaitFor(t, "host key failures", `sum(outpost_ssh_failures_total{job="`+gwJob+`",class="host_key"})`, promWait,
		func(s []testprometheus.Sample) bool { return len(s) == 1 && s[0].Value >= 1 })
	prom.WaitFor(t, "etcd's own metrics", `etcd_server_has_leader{job="`+cpJob+`"}`, promWait,
		func(s []testprometheus.Sample) bool { return len(s) == 1 && s[0].Value == 1 })
	prom.WaitFor(t, "gRPC server metrics", `sum(outpost_grpc_server_handled_total{job="`+cpJob+`",grpc_method="CreateRollout",grpc_code="OK"})`, promWait,
		func(s []testprometheus.Sample) bool { return len(s) == 1 && s[0].Value == 2 })
	prom.WaitFor(t, "certificate expiry", `count by (certificate) (outpost_certificate_expiry_timestamp_seconds > time())`, promWait,
		func(s []testprometheus.Sample) bool {
			return byLabel(s, "certificate") == "ca=1 controlplane_server=1 gateway_client=2"
		})

	t.Run("dashboard and alert queries", func(t *testing.T) {
		checkShippedQueries(t, prom)
	})
	t.Run("promtool check metrics", func(t *testing.T) {
		for _, addr := range []string{cp.MetricsAddr(), gwMetrics[dcA], gwMetrics[dcB]} {
			body, err := testprometheus.Scrape(ctxT(t), "http://"+addr+"/metrics")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(testprometheus.Promtool(t), "check", "metrics")
			cmd.Stdin = bytes.NewReader(body)
			out, err := cmd.CombinedOutput()
			if err == nil {
				continue
			}
			// The embedded etcd's own names break promtool's naming
			// lint (etcd_server_health_success, a counter without
			// _total, ...); they are etcd's to fix. A lint complaint
			// exits 3, anything else (a scrape it cannot parse) 1.
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Errorf("promtool check metrics on %s: %v\n%s", addr, err, out)
				continue
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.HasPrefix(line, "etcd_") {
					t.Errorf("promtool check metrics on %s: %s", addr, line)
				}
			}
		}
	})
}

// byLabel renders a vector as "l1,l2=value ..." sorted, for comparisons.
func byLabel(s []testprometheus.Sample, labels ...string) string {
	var parts []string
	for _, x := range s {
		var vals []string
		for _, l := range labels {
			vals = append(vals, x.Metric[l])
		}
		parts = append(parts, strings.Join(vals, ",")+"="+strconv.FormatFloat(x.Value, 'f', -1, 64))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func cmpLE(a, b string) int {
	fa, _ := strconv.ParseFloat(a, 64) // "+Inf" parses as +Inf
	fb, _ := strconv.ParseFloat(b, 64)
	switch {
	case fa < fb:
		return -1
	case fa > fb:
		return 1
	}
	return 0
}

// grafanaVars are what Grafana puts in place of the dashboard's variables.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__range", "5m",
	"$__interval", "15s",
	"$controlplane", cpJob,
	"$gateway", gwJob,
)

// metricToken finds the names of Outpost's, etcd's and gRPC's metrics in
// a query, and label names that look like them (sorted out by the caller).
var metricToken = regexp.MustCompile(`\b(?:outpost|etcd|grpc|go|process)_[a-zA-Z0-9_]+`)

// checkShippedQueries evaluates every expression of the Grafana dashboard
// and the alerting rules on prom (Prometheus' own parser decides whether
// it is valid) and checks that each metric name it uses is one prom
// scraped from the daemons.
func checkShippedQueries(t *testing.T, prom *testprometheus.Server) {
	var exprs []string
	dash, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "outpost.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("outpost.json: %v", err)
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	nRules := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			nRules++
		}
	}
	if len(d.Panels) < 8 || nRules < 6 {
		t.Fatalf("%d panels and %d rules read; the files were not parsed as expected", len(d.Panels), nRules)
	}

	ctx := ctxT(t)
	names, err := prom.Names(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := prom.Labels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exprs {
		q := grafanaVars.Replace(e)
		if strings.Contains(q, "$") {
			t.Errorf("query %q: a variable the test does not know", e)
			continue
		}
		if _, err := prom.Query(ctx, q); err != nil {
			t.Errorf("Prometheus refuses a shipped query: %v", err)
		}
		for _, name := range metricToken.FindAllString(q, -1) {
			if !slices.Contains(names, name) && !slices.Contains(labels, name) {
				t.Errorf("query %q names %s, which neither daemon exports", e, name)
			}
		}
	}
	if t.Failed() {
		t.Logf("metric names scraped: %s", fmt.Sprint(names))
	}
}
