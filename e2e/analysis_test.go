package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/controlplane/analysis"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/telemetry"
	"github.com/outposthq/outpost/internal/testprometheus"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Issue 16 end to end: canary analysis judged by a real Prometheus
// scraping the fleet's application. Each host's application exports
// http_requests_total and http_errors_total; how many of its requests
// fail depends on the release its current symlink points at, read at each
// scrape: releases of version badVersion fail 40%, others 1%. Their
// health check answers 200 all the same.
const (
	badVersion   = "6.6.6"
	analysisHost = 4 // hosts: one canary, three baseline
)

// appMetrics is one host's application: counters that grow at each scrape.
type appMetrics struct {
	serviceDir string
	mu         sync.Mutex
	requests   int // guarded by mu
	errors     int // guarded by mu
}

func (a *appMetrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	version, _ := os.ReadFile(filepath.Join(a.serviceDir, "current", "VERSION"))
	a.mu.Lock()
	a.requests += 100
	if strings.TrimSpace(string(version)) == badVersion {
		a.errors += 40
	} else {
		a.errors++
	}
	req, errs := a.requests, a.errors
	a.mu.Unlock()
	fmt.Fprintf(w, "# TYPE http_requests_total counter\nhttp_requests_total %d\n# TYPE http_errors_total counter\nhttp_errors_total %d\n", req, errs)
}

// startAppMetrics serves every host's application metrics on loopback and
// returns the scrape targets by job, the job being the node id.
func startAppMetrics(t *testing.T, s *system) map[string][]string {
	t.Helper()
	targets := map[string][]string{}
	for i, h := range s.fleet.Hosts() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: &appMetrics{serviceDir: h.ServiceDir()}, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		targets[e2etest.NodeID(i)] = []string{ln.Addr().String()}
	}
	return targets
}

// errorRateQuery is the error rate of the nodes a regex field names.
func errorRateQuery(regexField string) string {
	return `sum(rate(http_errors_total{job=~"{{.` + regexField + `}}"}[4s])) / sum(rate(http_requests_total{job=~"{{.` + regexField + `}}"}[4s]))`
}

// canaryPlan is a canary of version on one node, judged against the
// baseline: error rate at most 1.2 times the baseline's.
func canaryPlan(version string, a *outpostv1.PlanAnalysis) *outpostv1.PlanSpec {
	spec := plan(version, true, &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{
		{Name: "canary", Count: 1, Analysis: a},
		{Name: "rest", Batch: "100%"},
	}})
	return spec
}

func errorRateAnalysis(provider string) *outpostv1.PlanAnalysis {
	return &outpostv1.PlanAnalysis{
		Interval:     "2s",
		Count:        3,
		FailureLimit: 1,
		Measurements: []*outpostv1.PlanMeasurement{{
			Name:          "error-rate",
			Provider:      provider,
			Query:         errorRateQuery("NodesRegex"),
			BaselineQuery: errorRateQuery("BaselineRegex"),
			Success:       "result <= 1.2 * baseline",
		}},
	}
}

// newAnalysisSystem starts a fleet with v1 deployed everywhere, its
// applications scraped by a real Prometheus (started once the fleet is,
// before the control plane), and a control plane with two providers:
// "prom" (that Prometheus) and "down" (a closed loopback port).
func newAnalysisSystem(t *testing.T, opts ...systemOption) (*system, *testprometheus.Server) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + closed.Addr().String()
	closed.Close()
	var prom *testprometheus.Server
	s := newSystem(t, analysisHost, oneDC, append(opts, func(s *system) {
		s.cpConfig = func(c *controlplane.Config) {
			if prom == nil {
				prom = testprometheus.Start(t, testprometheus.Options{ScrapeInterval: 500 * time.Millisecond, Targets: startAppMetrics(t, s)})
			}
			c.AnalysisProviders = []analysis.ProviderConfig{
				{Name: "prom", URL: prom.URL, Timeout: "5s"},
				{Name: "down", URL: downURL, Timeout: "2s"},
			}
		}
	})...)
	s.startGateway("gw", dc1)
	s.deploy("1.0.0", "100%")
	prom.WaitFor(t, "every application scraped", `count(http_requests_total)`, promWait,
		func(smp []testprometheus.Sample) bool { return len(smp) == 1 && smp[0].Value == analysisHost })
	return s, prom
}

// analysisAudit waits for the rollout's rollout.analysis audit entry.
func analysisAudit(t *testing.T, s *system, id string) *outpostv1.AuditEntry {
	t.Helper()
	ac := outpostv1.NewAuditServiceClient(s.client.Conn)
	for i := 0; ; i++ {
		resp, err := ac.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: id, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			if e.GetAction() == "rollout.analysis" {
				return e
			}
		}
		if i == int(waitLimit/(100*time.Millisecond)) {
			t.Fatalf("no rollout.analysis audit entry for %s after %v", id, waitLimit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func measurementsOf(r *outpostv1.Rollout, stage string) []*outpostv1.Measurement {
	for _, st := range r.GetStages() {
		if st.GetName() == stage {
			return st.GetMeasurements()
		}
	}
	return nil
}

// TestCanaryAnalysisPromotesAGoodRelease: a release whose error rate is
// the baseline's passes its three rounds and goes to every node.
func TestCanaryAnalysisPromotesAGoodRelease(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(telemetry.ProviderOptions(telemetry.Service{Name: telemetry.ServiceControlPlane}, sdktrace.WithSpanProcessor(rec))...)
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	s, _ := newAnalysisSystem(t, withTracer(tp))
	_, digest := s.release("1.1.0", true)
	r := s.create(canaryPlan("1.1.0", errorRateAnalysis("prom")), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout ended %v %q, want SUCCEEDED", done.GetState(), done.GetMessage())
	}
	ms := measurementsOf(done, "canary")
	if len(ms) != 3 {
		t.Fatalf("%d measurements, want 3: %v", len(ms), ms)
	}
	for _, m := range ms {
		if m.GetVerdict() != outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS || m.GetValue() == "" || m.GetBaseline() == "" {
			t.Errorf("measurement %v, want a success with its value and baseline", m)
		}
	}
	for i := range s.nodes {
		s.checkOn(i, done.GetReleaseId(), 1)
	}
	if e := analysisAudit(t, s, r.GetId()); e.GetResult() != "OK" || e.GetDetails()["outcome"] != "passed" || e.GetDetails()["success"] != "3" {
		t.Errorf("audit entry %v, want a passed analysis of 3 successes", e)
	}
	events := 0
	for _, sp := range rec.Ended() {
		if sp.SpanContext().TraceID().String() != done.GetTraceId() {
			continue
		}
		for _, ev := range sp.Events() {
			if ev.Name == "analysis measurement" {
				events++
			}
		}
	}
	if events != 3 {
		t.Errorf("%d analysis measurement span events in the rollout's trace, want 3", events)
	}
}

// TestCanaryAnalysisRollsBackABadRelease: a release whose health check
// answers 200 but whose error rate is forty times the baseline's fails
// its analysis; the canary goes back to v1 and the reason names the
// query and the values.
func TestCanaryAnalysisRollsBackABadRelease(t *testing.T) {
	s, _ := newAnalysisSystem(t)
	v1 := s.host(0).current
	_, digest := s.release(badVersion, true)
	r := s.create(canaryPlan(badVersion, errorRateAnalysis("prom")), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK {
		t.Fatalf("rollout ended %v %q, want FAILED_ROLLED_BACK", done.GetState(), done.GetMessage())
	}
	msg := done.GetMessage()
	for _, want := range []string{"measurement error-rate", "http_errors_total", `job=~"srv-00001"`, "baseline", "result <= 1.2 * baseline"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %q", msg, want)
		}
	}
	ms := measurementsOf(done, "canary")
	if len(ms) != 2 || ms[1].GetVerdict() != outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE || !ms[1].GetActed() {
		t.Errorf("measurements %v, want two failures, the second acting (failure_limit 1)", ms)
	}
	if e := analysisAudit(t, s, r.GetId()); e.GetResult() != "FAILED" || e.GetDetails()["failure"] != "2" ||
		!strings.Contains(e.GetMessage(), "http_errors_total") {
		t.Errorf("audit entry %v, want a failed analysis naming the query, with 2 failures", e)
	}
	s.checkOn(0, v1, 1) // the canary: activated once, then rolled back to
	for i := 1; i < len(s.nodes); i++ {
		s.checkOn(i, v1, 1)
	}
}

// TestCanaryAnalysisUnreachableProviderPauses: a provider that cannot be
// reached is inconclusive, and the rollout pauses for a person instead of
// passing.
func TestCanaryAnalysisUnreachableProviderPauses(t *testing.T) {
	s, _ := newAnalysisSystem(t)
	_, digest := s.release("1.1.0", true)
	r := s.create(canaryPlan("1.1.0", errorRateAnalysis("down")), digest)
	paused := s.wait(r.GetId(), "the analysis to pause the rollout", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED || rolloutstate.Finished(r.GetState())
	})
	if paused.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PAUSED {
		t.Fatalf("rollout %v %q, want PAUSED: an unreachable provider must never pass", paused.GetState(), paused.GetMessage())
	}
	if !strings.Contains(paused.GetMessage(), "inconclusive") || !strings.Contains(paused.GetMessage(), "provider down") {
		t.Errorf("message %q, want an inconclusive analysis naming provider down", paused.GetMessage())
	}
	ms := measurementsOf(paused, "canary")
	if len(ms) != 1 || ms[0].GetVerdict() != outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_INCONCLUSIVE {
		t.Errorf("measurements %v, want one inconclusive", ms)
	}
	if st := paused.GetStages()[1].GetState(); st != outpostv1.StageState_STAGE_STATE_PENDING {
		t.Errorf("stage rest is %v: the rollout went on", st)
	}
	if _, err := s.client.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: r.GetId(), Reason: "test over"}); err != nil {
		t.Fatal(err)
	}
	s.waitDone(r.GetId())
}

// TestCanaryAnalysisDryRunNeverActs: a dry_run measurement that fails
// every round is recorded and the release still goes everywhere.
func TestCanaryAnalysisDryRunNeverActs(t *testing.T) {
	s, _ := newAnalysisSystem(t)
	a := errorRateAnalysis("prom")
	a.Measurements[0].DryRun = true
	_, digest := s.release(badVersion, true)
	r := s.create(canaryPlan(badVersion, a), digest)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout ended %v %q, want SUCCEEDED: dry runs never act", done.GetState(), done.GetMessage())
	}
	ms := measurementsOf(done, "canary")
	if len(ms) != 3 {
		t.Fatalf("%d measurements, want 3", len(ms))
	}
	for _, m := range ms {
		if !m.GetDryRun() || m.GetActed() || m.GetVerdict() != outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE {
			t.Errorf("measurement %v, want a dry-run failure that did not act", m)
		}
	}
}

// TestCanaryAnalysisResumesAfterRestart: a control plane restarted in the
// middle of an analysis resumes from the measurements in etcd: the
// rounds go on from where they were, none is taken twice.
func TestCanaryAnalysisResumesAfterRestart(t *testing.T) {
	s, _ := newAnalysisSystem(t)
	a := errorRateAnalysis("prom")
	a.Count = 4
	_, digest := s.release("1.1.0", true)
	r := s.create(canaryPlan("1.1.0", a), digest)
	s.wait(r.GetId(), "a first measurement", func(r *outpostv1.Rollout) bool { return len(measurementsOf(r, "canary")) >= 1 })
	s.stopCP()
	s.startCP()
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout ended %v %q, want SUCCEEDED", done.GetState(), done.GetMessage())
	}
	ms := measurementsOf(done, "canary")
	if len(ms) != 4 {
		t.Fatalf("%d measurements, want 4: %v", len(ms), ms)
	}
	for i, m := range ms {
		if m.GetRound() != int32(i) {
			t.Errorf("measurement %d is of round %d", i, m.GetRound())
		}
	}
}
