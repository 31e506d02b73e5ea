package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/shell"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestConsoleRealProcesses drives two consoles with Chromium against
// Outpost as it runs in production: a control plane and two gateways,
// each an `outpost` process, deploying to four real OpenSSH sshd nodes in
// two datacenters, and an `outpost console` process per person. The
// requester's approve button is disabled with the control plane's
// four-eyes reason; the approver approves in their console and follows the
// rollout live to SUCCEEDED; a node changed by hand over SSH shows as
// drifted on the fleet page after "verify now" (which the approver's role
// may not use: disabled, with the reason), and the drifted-only filter
// keeps it alone; a failed node's hook output shows in its timeline.
func TestConsoleRealProcesses(t *testing.T) {
	dir := t.TempDir()
	bin := e2etest.BuildOutpost(t, dir)
	key := e2etest.NewSSHKey(t, dir)
	sys := e2etest.StartSystem(t, bin, dir)
	nodes := e2etest.StartSSHDNodes(t, dir, "node", 4, key.Signer.PublicKey())
	const dcA, dcB = "dc-east", "dc-west"
	var inv []*outpostv1.Node
	for i, n := range nodes {
		dc := dcA
		if i >= 2 {
			dc = dcB
		}
		node := n.Node(dc)
		if i == 0 {
			node.Labels["canary"] = "yes"
		}
		inv = append(inv, node)
	}
	if err := sys.Client.Apply(ctxT(t), inv); err != nil {
		t.Fatal(err)
	}
	sys.StartGateway(t, "gw-east", dcA, key.File)
	sys.StartGateway(t, "gw-west", dcB, key.File)
	doraFile := sys.User(t, "dora", pki.RoleDeployer)
	aliceFile := sys.User(t, "alice", pki.RoleApprover)
	doraCred, err := pki.LoadCredential(doraFile)
	if err != nil {
		t.Fatal(err)
	}
	dora, err := e2etest.Dial(sys.Addr, doraCred)
	if err != nil {
		t.Fatal(err)
	}
	defer dora.Close()

	release, err := simfleet.BuildRelease(dir, "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := dora.Upload(ctxT(t), release.Path)
	if err != nil {
		t.Fatal(err)
	}
	maxFail := int32(0)
	plan := func(selector map[string]string) *outpostv1.PlanSpec {
		return &outpostv1.PlanSpec{
			App:      e2etest.App,
			Artifact: &outpostv1.PlanArtifact{Path: filepath.Base(release.Path)},
			Targets:  &outpostv1.PlanTargets{Selector: selector},
			// Relative to each node's home.
			Deploy:   &outpostv1.PlanDeploy{Path: e2etest.DeployPath},
			Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: "50%", MaxFailPercent: &maxFail},
		}
	}
	spec := plan(map[string]string{"app": e2etest.App})
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	spec.ChangeId = "CHG-REAL-1"
	id := createPendingApproval(t, dora, spec, digest)

	ctx, cancel := context.WithTimeout(context.Background(), browserLimit)
	defer cancel()
	doraURL, _ := startConsole(t, bin, sys.Addr, doraFile)
	aliceURL, _ := startConsole(t, bin, sys.Addr, aliceFile)
	doraTab, aliceTab := browser(t, ctx), browser(t, ctx)

	// The requester may not approve: the control plane says why.
	disabled, why := approveButton(t, doraTab, doraURL, "dora (deployer)", id)
	if !disabled || !strings.Contains(why, "four eyes: you (dora) requested this rollout") {
		t.Errorf("requester's approve button: disabled %v, reason %q; want disabled, with the control plane's four-eyes reason", disabled, why)
	}

	// The approver approves and follows the rollout live.
	run(t, aliceTab, "approver's approvals page",
		chromedp.Navigate(aliceURL),
		waitText("#me", "alice (approver)", 20*time.Second),
		js(`location.hash = "#/approvals"`),
		chromedp.WaitVisible(css("#diff-"+id)),
		chromedp.SendKeys(css("#reason-"+id), "CAB approved CHG-REAL-1"))
	screenshot(t, aliceTab, "console-real-approvals")
	run(t, aliceTab, "approve and follow",
		chromedp.Click(css("#approve-"+id)),
		chromedp.WaitVisible(css("#confirm-ok")),
		chromedp.Click(css("#confirm-ok")),
		waitText("#rollout-id", id, 20*time.Second),
		js(`window.notReloaded = true`),
		waitText("#rollout-state", "SUCCEEDED", 2*time.Minute),
		waitJS(`window.consoleGridNodes === 4`, 20*time.Second))
	if !read(t, aliceTab, "no reload", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Error("the rollout page reloaded to reach SUCCEEDED; want live updates")
	}
	screenshot(t, aliceTab, "console-real-rollout")
	done, err := sys.Client.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	rel := done.GetRollout().GetReleaseId()
	for _, n := range nodes {
		if cur, err := os.Readlink(filepath.Join(n.Home, e2etest.DeployPath, "current")); err != nil || filepath.Base(cur) != rel {
			t.Fatalf("%s: current -> %q (%v), want release %s", n.Name, cur, err, rel)
		}
	}

	waitDesired(t, sys.Client, len(nodes))

	// An operator switches node-3's current to a directory of their own.
	drifted := nodes[2]
	if _, err := drifted.SSH(ctxT(t), key.File, "cd "+shell.Quote(e2etest.DeployPath)+` && mkdir -p releases/by-hand && ln -sfn releases/by-hand current`); err != nil {
		t.Fatal(err)
	}
	// The approver's role may not verify nodes.
	run(t, aliceTab, "approver's fleet page",
		js(`location.hash = "#/fleet"`),
		chromedp.WaitVisible(css("#verify-all")))
	if d := read(t, aliceTab, "verify button", chromedp.Evaluate[bool](`document.querySelector('#verify-all').disabled`)); !d {
		t.Error("approver's verify now button is enabled; want disabled (VerifyNodes needs the deploy permission)")
	}
	if w := read(t, aliceTab, "verify reason", chromedp.Text(css("#verify-why"))); !strings.Contains(w, "your role (approver) cannot verify nodes") {
		t.Errorf("approver's verify reason = %q", w)
	}
	// The deployer verifies every node now.
	run(t, doraTab, "verify now",
		js(`location.hash = "#/fleet"`),
		chromedp.WaitVisible(css("#verify-all")),
		chromedp.Click(css("#verify-all")),
		chromedp.WaitVisible(css("#confirm-ok")))
	if says := read(t, doraTab, "verify confirmation", chromedp.Text(css("#confirm-text"))); !strings.Contains(says, "Verify all 4 node(s) now") || !strings.Contains(says, "nothing on the nodes changes") {
		t.Errorf("verify confirmation says %q; want what it does to all 4 nodes", says)
	}
	run(t, doraTab, "verify and see the drift",
		chromedp.Click(css("#confirm-ok")),
		waitText("#verify-progress", "last verification: 4 node(s), 1 drifted", time.Minute),
		waitText("#drift-"+drifted.Name, "release switched", 10*time.Second))
	for _, n := range nodes {
		text := read(t, doraTab, "drift of "+n.Name, chromedp.Text(css("#drift-"+n.Name)))
		class := read(t, doraTab, "row of "+n.Name, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q).className`, "#node-"+n.Name)))
		want, wantClass := "none", ""
		if n.Name == drifted.Name {
			want, wantClass = "release switched", "drifted"
		}
		if !strings.HasPrefix(text, want) || class != wantClass {
			t.Errorf("fleet page, %s: drift %q, row class %q; want %q, %q", n.Name, text, class, want, wantClass)
		}
	}
	observed := read(t, doraTab, "observed release", chromedp.Text(css("#node-"+drifted.Name+" td:nth-child(6)")))
	if observed != "by-hand" {
		t.Errorf("observed release of %s = %q, want by-hand", drifted.Name, observed)
	}
	run(t, doraTab, "drifted only",
		chromedp.Click(css("#fleet-drifted")),
		waitJS(`location.hash === "#/fleet?drifted=1"`, 10*time.Second))
	// The page redraws with only the drifted node.
	rows := `Array.from(document.querySelectorAll('table.fleet tr[id^="node-"]'), (r) => r.id).join(",")`
	run(t, doraTab, "only the drifted node listed", waitJS(rows+` === "node-`+drifted.Name+`"`, 10*time.Second))
	screenshot(t, doraTab, "console-fleet")

	// A release whose hook fails on the canary: its output shows in the
	// node's timeline.
	const marker = "hook-says-no-5113"
	spec2 := plan(map[string]string{"canary": "yes"})
	spec2.Hooks = &outpostv1.Hooks{AfterInstall: "echo " + marker + " >&2; exit 3"}
	release2, err := simfleet.BuildRelease(t.TempDir(), "2.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	digest2, err := dora.Upload(ctxT(t), release2.Path)
	if err != nil {
		t.Fatal(err)
	}
	spec2.Artifact.Path = filepath.Base(release2.Path)
	r2, err := dora.Create(ctxT(t), spec2, digest2)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if _, err := dora.Wait(wctx, r2.GetId(), 200*time.Millisecond, func(r *outpostv1.Rollout) bool { return rolloutstate.Finished(r.GetState()) }); err != nil {
		t.Fatal(err)
	}
	run(t, doraTab, "failed node's steps",
		js(`location.hash = "#/rollout/`+r2.GetId()+`"`),
		waitJS(`window.consoleGridNodes === 1`, 20*time.Second),
		js(`const c = document.querySelector('#grid'); const b = c.getBoundingClientRect();
			c.dispatchEvent(new MouseEvent('click', {clientX: b.left + 3, clientY: b.top + 3, bubbles: true}))`),
		waitText("#node-panel", marker, 20*time.Second))
	if panel := read(t, doraTab, "node panel", chromedp.Text(css("#node-panel"))); !strings.Contains(panel, nodes[0].Name) {
		t.Errorf("node panel does not name %s:\n%s", nodes[0].Name, panel)
	}
	screenshot(t, doraTab, "console-real-node")
}

// waitDesired waits until n nodes have a desired release recorded (just
// after their deployment succeeded), so a verification compares them.
func waitDesired(t *testing.T, c *e2etest.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		resp, err := c.ListNodes(ctxT(t), &outpostv1.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, node := range resp.GetNodes() {
			if node.GetStatus().GetDesired().GetRelease() != "" {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d nodes have a desired release after %v", got, n, waitLimit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createPendingApproval creates a rollout of spec that must wait for an
// approver, as the requester c, and returns its id.
func createPendingApproval(t *testing.T, c *e2etest.Client, spec *outpostv1.PlanSpec, digest string) string {
	t.Helper()
	r, err := c.Create(ctxT(t), spec, digest)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		t.Fatalf("rollout %s is %v, want PENDING_APPROVAL", r.GetId(), r.GetState())
	}
	return r.GetId()
}

// approveButton logs in to the console at url in the tab, waits for the
// person (as "name (role)"), opens the approvals page and tells whether
// rollout id's approve button is disabled and the reason shown.
func approveButton(t *testing.T, tab context.Context, url, person, id string) (bool, string) {
	t.Helper()
	run(t, tab, person+"'s approvals page",
		chromedp.Navigate(url),
		waitText("#me", person, 20*time.Second),
		js(`location.hash = "#/approvals"`),
		chromedp.WaitVisible(css("#approve-"+id)))
	disabled := read(t, tab, "approve button", chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector(%q).disabled`, "#approve-"+id)))
	why := ""
	if read(t, tab, "reason shown", chromedp.Evaluate[bool](fmt.Sprintf(`!!document.querySelector(%q)`, "#why-"+id))) {
		why = read(t, tab, "reason", chromedp.Text(css("#why-"+id)))
	}
	return disabled, why
}
