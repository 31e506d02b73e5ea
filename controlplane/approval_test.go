package controlplane

import (
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestCallerApproval: GetRollout and ListRollouts say, for each caller,
// whether they may approve a rollout and why not, by the rule
// ApproveRollout applies: four eyes unless the control plane allows
// self-approval, the approver role, the rollout's state. What they say
// matches what ApproveRollout then does.
func TestCallerApproval(t *testing.T) {
	for _, allowSelf := range []bool{false, true} {
		s := startCP(t, t.TempDir(), func(c *Config) { c.AllowSelfApproval = allowSelf })
		admin := dial(t, s.Addr())
		applyNodes(t, admin, 1, nil)
		digest := upload(t, admin, "a.tar.gz", []byte("a"))
		callers := map[string]*client{
			"dora": userClient(t, s, "dora", pki.RoleDeployer),
			"ann":  userClient(t, s, "ann", pki.RoleAdmin),
			"bob":  userClient(t, s, "bob", pki.RoleApprover),
			"vic":  userClient(t, s, "vic", pki.RoleViewer),
		}
		spec := rollingPlan("100%", 0)
		spec.Approval = &outpostv1.PlanApproval{Required: true}
		// ann (admin) requests: she may approve only when self-approval is allowed.
		r := createRollout(t, callers["ann"], spec, digest)
		type want struct {
			may    bool
			self   bool
			reason string
		}
		wants := map[string]want{
			"dora": {reason: "your role (deployer) cannot approve"},
			"bob":  {may: true},
			"vic":  {reason: "your role (viewer) cannot approve"},
			"ann":  {reason: "four eyes: you (ann) requested this rollout"},
		}
		if allowSelf {
			wants["ann"] = want{may: true, self: true}
		}
		for name, c := range callers {
			got, err := c.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: r.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			list, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
			if err != nil || len(list.GetRollouts()) != 1 {
				t.Fatalf("%s: list rollouts = %v, %v", name, list, err)
			}
			w := wants[name]
			for what, ca := range map[string]*outpostv1.CallerApproval{"GetRollout": got.GetRollout().GetCallerApproval(), "ListRollouts": list.GetRollouts()[0].GetCallerApproval()} {
				if ca.GetMayApprove() != w.may || ca.GetSelfApproval() != w.self || !strings.Contains(ca.GetReason(), w.reason) || (w.may && ca.GetReason() != "") {
					t.Errorf("allow self %v, %s for %s: caller approval %v, want may %v, self %v, reason with %q", allowSelf, what, name, ca, w.may, w.self, w.reason)
				}
			}
		}
		// What it said is what the call does.
		_, err := callers["ann"].ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: r.GetId()})
		if (err == nil) != allowSelf {
			t.Errorf("allow self %v: ann approving her own rollout: %v", allowSelf, err)
		}
		if !allowSelf {
			if _, err := callers["bob"].ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: r.GetId()}); err != nil {
				t.Fatal(err)
			}
		}
		// Once approved, nobody may approve it.
		got, err := callers["bob"].GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: r.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if ca := got.GetRollout().GetCallerApproval(); ca.GetMayApprove() || !strings.Contains(ca.GetReason(), "only a rollout PENDING_APPROVAL can be approved") {
			t.Errorf("allow self %v: approved rollout %s (%v): caller approval %v, want refused by state", allowSelf, r.GetId(), got.GetRollout().GetState(), ca)
		}
	}
}
