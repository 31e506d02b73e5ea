package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestConsoleSelfApproval: on a control plane that allows self-approval,
// the console of an admin who requested a rollout offers the approve
// button (the control plane says so in the rollout's caller_approval,
// the console does not guess), says why, and the approval goes through
// with the admin as approver.
func TestConsoleSelfApproval(t *testing.T) {
	bin := buildCLI(t)
	s := newSystem(t, 1, oneDC, withCPConfig(func(c *controlplane.Config) { c.AllowSelfApproval = true }))
	s.startGateway("gw-1", dc1)
	adaFile := s.user("ada", pki.RoleAdmin)
	adaCred, err := pki.LoadCredential(adaFile)
	if err != nil {
		t.Fatal(err)
	}
	ada, err := e2etest.Dial(s.addr, adaCred)
	if err != nil {
		t.Fatal(err)
	}
	defer ada.Close()
	_, digest := s.release("1.0.0", true)
	spec := e2etest.RollingPlan("release-1.0.0.tar.gz", "1", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	r, err := ada.Create(ctxT(t), spec, digest)
	if err != nil {
		t.Fatal(err)
	}
	id := r.GetId()

	ctx, cancel := context.WithTimeout(context.Background(), browserLimit)
	defer cancel()
	url, _ := startConsole(t, bin, s.addr, adaFile)
	tab := browser(t, ctx)
	disabled, why := approveButton(t, tab, url, "ada (admin)", id)
	if disabled || !strings.Contains(why, "allows self-approval") {
		t.Fatalf("self-approval allowed: requester's approve button disabled %v, note %q; want enabled, saying self-approval is allowed", disabled, why)
	}
	run(t, tab, "approve own rollout",
		chromedp.Click(css("#approve-"+id)),
		chromedp.WaitVisible(css("#confirm-ok")),
		chromedp.Click(css("#confirm-ok")),
		waitText("#rollout-id", id, 20*time.Second),
		waitText("#rollout-state", "SUCCEEDED", 90*time.Second))
	got, err := s.client.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetRollout().GetApprover() != "ada" {
		t.Errorf("approver = %q, want ada", got.GetRollout().GetApprover())
	}
}
