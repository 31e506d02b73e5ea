package controlplane

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/outposthq/outpost/controlplane/analysis"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestParseFileConfigAnalysisProviders(t *testing.T) {
	fc, err := ParseFileConfig([]byte(`analysis_providers:
  - {name: prom, url: "http://127.0.0.1:9090", timeout: 5s}
  - {name: prom-eu, url: "https://prom.eu.internal:9090", tls: {insecure_skip_verify: false}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(fc.AnalysisProviders) != 2 || fc.AnalysisProviders[1].Name != "prom-eu" || fc.AnalysisProviders[0].Timeout != "5s" {
		t.Errorf("providers %+v", fc.AnalysisProviders)
	}
	for _, tt := range []struct{ in, want string }{
		{"analysis_providers: [{name: p, url: 'ftp://x'}]", "analysis_providers[0]: url"},
		{"analysis_providers: [{name: p, url: 'http://127.0.0.1', tokn: x}]", "tokn"},
		{"analysis_providers: [{name: p, url: 'http://127.0.0.1'}, {name: p, url: 'http://127.0.0.2'}]", "declared twice"},
	} {
		if _, err := ParseFileConfig([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFileConfig(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

// TestAnalysisProviderMustBeDeclared: a plan names a provider, and only
// one the control plane declares; nothing is created otherwise.
func TestAnalysisProviderMustBeDeclared(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) {
		c.AnalysisProviders = []analysis.ProviderConfig{{Name: "prom", URL: "http://127.0.0.1:9"}}
	})
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "app.tar.gz", []byte("app"))
	withProvider := func(name string) *outpostv1.PlanSpec {
		p := rollingPlan("1", 0)
		p.Strategy = &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{{Name: "canary", Count: 1, Analysis: &outpostv1.PlanAnalysis{
			Count: 1, Measurements: []*outpostv1.PlanMeasurement{{Name: "e", Provider: name, Query: "up", Success: "result > 0.0"}},
		}}, {Name: "rest"}}}
		return p
	}
	if _, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: withProvider("prom"), ArtifactSha256: digest, DryRun: true}); err != nil {
		t.Fatalf("declared provider: %v", err)
	}
	_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: withProvider("elsewhere"), ArtifactSha256: digest})
	wantCode(t, "CreateRollout", err, codes.InvalidArgument, `"elsewhere" is not an analysis provider of this control plane (declared: prom)`)
	bad := withProvider("prom")
	bad.Strategy.Stages[0].Analysis.Measurements[0].Success = "result <"
	_, err = c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: bad, ArtifactSha256: digest})
	wantCode(t, "CreateRollout", err, codes.InvalidArgument, "not a valid CEL expression")
	list, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil || len(list.GetRollouts()) != 0 {
		t.Errorf("rollouts after refusals: %v (%v), want none", list.GetRollouts(), err)
	}
}
