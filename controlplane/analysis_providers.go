package controlplane

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/outposthq/outpost/controlplane/analysis"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// checkProviders refuses a plan whose analysis names a provider the
// control plane's configuration does not declare: a plan names providers,
// never URLs. The error is INVALID_ARGUMENT naming each field at fault.
func checkProviders(ps *analysis.Providers, spec *outpostv1.PlanSpec) error {
	var msgs []string
	var vs []*errdetails.BadRequest_FieldViolation
	analyses := map[string]*outpostv1.PlanAnalysis{"plan.strategy.analysis": spec.GetStrategy().GetAnalysis()}
	for i, st := range spec.GetStrategy().GetStages() {
		analyses[fmt.Sprintf("plan.strategy.stages[%d].analysis", i)] = st.GetAnalysis()
	}
	for _, f := range sortedKeys(analyses) {
		for j, m := range analyses[f].GetMeasurements() {
			if m.GetProvider() == "" || ps.Has(m.GetProvider()) {
				continue // an empty one is left to plan validation
			}
			field := fmt.Sprintf("%s.measurements[%d].provider", f, j)
			desc := fmt.Sprintf("%q is not an analysis provider of this control plane", clipName(m.GetProvider()))
			if names := ps.Names(); len(names) > 0 {
				desc += " (declared: " + strings.Join(names, ", ") + ")"
			} else {
				desc += " (it declares none: an admin adds analysis_providers to the --config file)"
			}
			msgs = append(msgs, field+": "+desc)
			vs = append(vs, &errdetails.BadRequest_FieldViolation{Field: field, Description: desc})
		}
	}
	if len(vs) == 0 {
		return nil
	}
	return withViolations(codes.InvalidArgument, strings.Join(msgs, "; "), vs)
}

func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
