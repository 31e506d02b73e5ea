package controlplane

import (
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestAllowSelfApprovalFromConfigFile: allow_self_approval in the
// configuration file reaches the approval decision of a real server, for
// its environment only: the requester may approve their own rollout in
// dev, not in staging (the default) nor in prod (protected, where the
// loader refuses the key).
func TestAllowSelfApprovalFromConfigFile(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"environments:\n  prod:\n    protected: true\n    allow_self_approval: true\n", "environments.prod.allow_self_approval: a protected environment requires an approval by someone other than the requester"},
		{"environments:\n  dev:\n    allow_self_approval: dev-only\n", `line 3: environments.dev.allow_self_approval: "dev-only" must be true or false`},
		{"environments:\n  dev:\n    allow_self_approval: [true]\n", `line 3: environments.dev.allow_self_approval:`},
	} {
		if _, err := ParseFileConfig([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFileConfig(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}

	fc, err := ParseFileConfig([]byte("environments:\n  prod:\n    protected: true\n    allow_self_approval: false\n  staging: {}\n  dev:\n    allow_self_approval: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := startCP(t, t.TempDir(), func(c *Config) { c.Environments = fc.Environments })
	admin := dial(t, s.Addr())
	applyNodes(t, admin, 1, nil)
	digest := upload(t, admin, "a.tar.gz", []byte("a"))
	ann := userClient(t, s, "ann", pki.RoleAdmin)
	for _, env := range []string{"prod", "staging", "dev"} {
		spec := rollingPlan("100%", 0)
		spec.App = "app-" + env
		spec.Environment = env
		spec.Approval = &outpostv1.PlanApproval{Required: true}
		r := createRollout(t, ann, spec, digest)
		if r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
			t.Fatalf("%s: rollout %s is %v, want PENDING_APPROVAL", env, r.GetId(), r.GetState())
		}
		allowed := env == "dev"
		got, err := ann.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: r.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if ca := got.GetRollout().GetCallerApproval(); ca.GetMayApprove() != allowed || ca.GetSelfApproval() != allowed ||
			(!allowed && !strings.Contains(ca.GetReason(), "four eyes")) {
			t.Errorf("%s: the requester's caller approval = %v, want may approve %v", env, ca, allowed)
		}
		_, err = ann.ApproveRollout(ctxT(t), &outpostv1.ApproveRolloutRequest{Id: r.GetId()})
		if (err == nil) != allowed || (err != nil && !strings.Contains(err.Error(), "another person must approve it")) {
			t.Errorf("%s: the requester approving her own rollout: %v, want allowed %v", env, err, allowed)
		}
	}
}
