package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// chromiumPath is Debian's Chromium, which scripts/deps.sh installs.
const chromiumPath = "/usr/bin/chromium"

// consoleShotsEnv names a directory to save the browser tests'
// screenshots into (docs/images for the README); unset saves none.
const consoleShotsEnv = "OUTPOST_CONSOLE_SCREENSHOTS"

// browserLimit bounds a browser test.
const browserLimit = 4 * time.Minute

// startConsole runs `outpost console` (the built binary) with cred as its
// credential and returns the login URL it printed. The process ends with
// the test.
func startConsole(t *testing.T, bin, addr, credFile string) (string, *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "console", "--controlplane", addr)
	cmd.Env = append(os.Environ(), "OUTPOST_CREDENTIAL="+credFile)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start outpost console: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		t.Logf("outpost console (%s) stderr:\n%s", filepath.Base(credFile), stderr.String())
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case u, ok := <-line:
		if !ok || !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.Contains(u, "/login?token=") {
			t.Fatalf("outpost console printed %q, want a loopback login URL", u)
		}
		return u, stderr
	case <-time.After(30 * time.Second):
		t.Fatalf("outpost console printed no URL in 30s; stderr:\n%s", stderr.String())
	}
	return "", nil
}

// lockedBuffer is a process's standard error, read while it is written.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// browser starts a headless Chromium with a fresh profile and returns a
// tab's context.
func browser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v (scripts/deps.sh installs chromium)", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancel)
	bctx, cancel2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel2)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// stepLimit bounds one run or read in a tab.
const stepLimit = 2 * time.Minute

// run runs the steps in the tab; on failure it shows the page's text.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	read(t, ctx, what, chromedp.Steps(steps...))
}

// read returns what the action reads from the tab, within stepLimit.
func read[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepLimit)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		body, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
		t.Fatalf("%s: %v\npage:\n%s", what, err, body)
	}
	return v
}

// js runs a statement in the page.
func js(stmt string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[bool]("(() => { "+stmt+"; return true })()")(ctx, t)
		return chromedp.Void{}, err
	}
}

// screenshot saves the page as NAME.png when consoleShotsEnv says where.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv(consoleShotsEnv)
	if dir == "" {
		return
	}
	png := read(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitText waits until the element's text contains want.
func waitText(sel, want string, limit time.Duration) chromedp.Action[chromedp.Void] {
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want)
	return waitJS(expr, limit)
}

// waitJS waits until the expression is true.
func waitJS(expr string, limit time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(limit), chromedp.WithPollingInterval(100*time.Millisecond))
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// user creates a user with role and writes their credential file.
func (s *system) user(name string, role pki.Role) string {
	s.t.Helper()
	path := filepath.Join(s.dir, name+".pem")
	if _, err := enroll.CreateUser(ctxT(s.t), s.client.AdminServiceClient, name, role, 0, path, s.addr); err != nil {
		s.t.Fatalf("create user %s: %v", name, err)
	}
	return path
}

// TestConsoleApprovalFlow runs two consoles, each its own outpost process
// with its own person's credential, against the real system, and drives
// them with Chromium: the requester's approve button is disabled with the
// four-eyes reason; the approver approves in their console and follows the
// rollout live (no reload) to SUCCEEDED; a failed node's hook output shows
// in its step timeline; a used login link is refused.
func TestConsoleApprovalFlow(t *testing.T) {
	bin := buildCLI(t)
	s := newSystem(t, 2, oneDC)
	s.startGateway("gw-1", dc1)
	doraFile := s.user("dora", pki.RoleDeployer)
	aliceFile := s.user("alice", pki.RoleApprover)
	doraCred, err := pki.LoadCredential(doraFile)
	if err != nil {
		t.Fatal(err)
	}
	dora, err := e2etest.Dial(s.addr, doraCred)
	if err != nil {
		t.Fatal(err)
	}
	defer dora.Close()

	_, digest := s.release("1.0.0", true)
	spec := e2etest.RollingPlan("release-1.0.0.tar.gz", "1", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	spec.ChangeId = "CHG-CONSOLE-1"
	id := createPendingApproval(t, dora, spec, digest)

	ctx, cancel := context.WithTimeout(context.Background(), browserLimit)
	defer cancel()
	doraURL, doraLog := startConsole(t, bin, s.addr, doraFile)
	aliceURL, _ := startConsole(t, bin, s.addr, aliceFile)
	doraTab, aliceTab := browser(t, ctx), browser(t, ctx)

	// The requester sees the rollout waiting, but may not approve it.
	disabled, why := approveButton(t, doraTab, doraURL, "dora (deployer)", id)
	if !disabled || !strings.Contains(why, "four eyes") {
		t.Errorf("requester's approve button: disabled %v, reason %q; want disabled, saying four eyes", disabled, why)
	}

	// The used link works no more, not even for another browser.
	run(t, aliceTab, "reuse of the requester's login link", chromedp.Navigate(doraURL))
	refused := read(t, aliceTab, "refusal", chromedp.Text(css("body")))
	if !strings.Contains(refused, "not valid") {
		t.Errorf("second use of a login link shows %q, want a refusal", refused)
	}

	// Another page in the requester's browser, of another origin on the
	// same site (127.0.0.1, another port: the SameSite=Strict cookie goes
	// along), cannot act through the requester's console: the console's
	// Origin and JSON checks refuse both posts.
	doraBase := strings.SplitN(doraURL, "/login", 2)[0]
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><script>
			window.csrfDone = 0;
			for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
				fetch(%q, {method: 'POST', mode: 'no-cors', credentials: 'include', headers: {'Content-Type': type}, body: '{"reason": "csrf"}'})
					.finally(() => window.csrfDone++);
			}</script>`, doraBase+"/api/rollouts/"+id+"/abort")
	}))
	defer attacker.Close()
	run(t, doraTab, "cross-origin posts to the requester's console",
		chromedp.Navigate(attacker.URL),
		waitJS(`window.csrfDone === 2`, 20*time.Second),
		chromedp.Navigate(doraBase+"/"),
		waitText("#me", "dora (deployer)", 20*time.Second))
	refusal := "console: refused a request\" method=POST path=/api/rollouts/" + id + "/abort reason=\"cross-origin"
	if n := strings.Count(doraLog.String(), refusal); n != 2 {
		t.Errorf("the requester's console refused %d cross-origin posts, want 2:\n%s", n, doraLog.String())
	}
	if got, err := s.client.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id}); err != nil || got.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		t.Fatalf("after cross-origin abort attempts: %v, %v; want PENDING_APPROVAL still", got.GetRollout().GetState(), err)
	}

	// The approver approves in their own console, and follows the rollout.
	run(t, aliceTab, "approver's approvals page",
		chromedp.Navigate(aliceURL),
		waitText("#me", "alice (approver)", 20*time.Second),
		js(`location.hash = "#/approvals"`),
		chromedp.WaitVisible(css("#diff-"+id)),
		chromedp.SendKeys(css("#reason-"+id), "CAB approved CHG-CONSOLE-1"))
	diff := read(t, aliceTab, "diff", chromedp.Text(css("#diff-"+id)))
	if !strings.Contains(diff, "CHG-CONSOLE-1") {
		t.Errorf("approval diff does not show the plan's change id:\n%s", diff)
	}
	screenshot(t, aliceTab, "console-approvals")
	run(t, aliceTab, "confirm the approval",
		chromedp.Click(css("#approve-"+id)),
		chromedp.WaitVisible(css("#confirm-ok")),
		chromedp.Click(css("#confirm-ok")),
		waitText("#rollout-id", id, 20*time.Second),
		// A mark that a reload would wipe.
		js(`window.notReloaded = true`),
		waitText("#rollout-state", "SUCCEEDED", 90*time.Second))
	kept := read(t, aliceTab, "no reload", chromedp.Evaluate[bool](`window.notReloaded === true`))
	// The grid follows too: both nodes' cells turn SUCCEEDED's colour.
	run(t, aliceTab, "grid of a succeeded rollout", waitJS(`(() => {
		const c = document.querySelector('#grid').getContext('2d');
		const cell = document.querySelector('#grid').width / Math.floor(document.querySelector('#grid').width / 22);
		return [0, 1].every((i) => { const p = c.getImageData(i * cell + 2, 2, 1, 1).data; return p[0] === 0x2d && p[1] === 0xa4 && p[2] === 0x4e; });
	})()`, 20*time.Second))
	if !kept {
		t.Error("the rollout page reloaded to reach SUCCEEDED; want live updates")
	}
	screenshot(t, aliceTab, "console-rollout")
	got, err := s.client.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetRollout().GetApprover() != "alice" {
		t.Errorf("rollout approver = %q, want alice (the console calls with its user's credential)", got.GetRollout().GetApprover())
	}

	// A release whose hook fails: its output shows in the node's timeline.
	const marker = "hook-says-no-7731"
	_, digest2 := s.release("2.0.0", true)
	spec2 := e2etest.RollingPlan("release-2.0.0.tar.gz", "1", 0)
	spec2.Hooks.AfterInstall = "echo " + marker + " >&2; exit 3"
	r2, err := dora.Create(ctxT(t), spec2, digest2)
	if err != nil {
		t.Fatal(err)
	}
	s.waitDone(r2.GetId())
	run(t, doraTab, "failed node's steps",
		js(`location.hash = "#/rollout/`+r2.GetId()+`"`),
		waitJS(`window.consoleGridNodes === 2`, 20*time.Second),
		// The first cell is srv-00001, the node that failed.
		js(`const c = document.querySelector('#grid'); const b = c.getBoundingClientRect();
			c.dispatchEvent(new MouseEvent('click', {clientX: b.left + 3, clientY: b.top + 3, bubbles: true}))`),
		waitText("#node-panel", marker, 20*time.Second))
	panel := read(t, doraTab, "node panel", chromedp.Text(css("#node-panel")))
	if !strings.Contains(panel, e2etest.NodeID(0)) {
		t.Errorf("node panel does not name %s:\n%s", e2etest.NodeID(0), panel)
	}
	screenshot(t, doraTab, "console-node")
}

// gridNodes is the size of the rollout whose grid TestConsoleGrid draws.
const gridNodes = 10000

// TestConsoleGrid opens a rollout of 10,000 nodes (in a datacenter without
// a gateway, so they stay pending) in the console and records how long the
// page takes from opening to a drawn grid, and the drawing alone. It
// asserts only that the grid is complete and follows the rollout live;
// the figures go to the log (and BENCHMARKS.md).
func TestConsoleGrid(t *testing.T) {
	bin := buildCLI(t)
	s := newSystem(t, 1, oneDC)
	const dc = "dc-grid"
	for start := 0; start < gridNodes; start += 1000 {
		var batch []*outpostv1.Node
		for i := start; i < start+1000; i++ {
			batch = append(batch, &outpostv1.Node{
				Id: fmt.Sprintf("grid-%05d", i), Address: fmt.Sprintf("127.0.0.1:%d", 20000+i%1000), Datacenter: dc, User: "deploy",
				Labels: map[string]string{"grid": "yes"},
			})
		}
		if err := s.client.Apply(ctxT(t), batch); err != nil {
			t.Fatal(err)
		}
	}
	_, digest := s.release("1.0.0", true)
	spec := e2etest.RollingPlan("release-1.0.0.tar.gz", "10%", 100)
	spec.Targets = &outpostv1.PlanTargets{Selector: map[string]string{"grid": "yes"}}
	r := s.create(spec, digest)

	ctx, cancel := context.WithTimeout(context.Background(), browserLimit)
	defer cancel()
	url, _ := startConsole(t, bin, s.addr, s.adminFile)
	tab := browser(t, ctx)
	run(t, tab, "open the rollout",
		chromedp.Navigate(url),
		waitText("#me", "(admin)", 20*time.Second),
		js(`location.hash = "#/rollout/`+r.GetId()+`"`),
		waitJS(fmt.Sprintf(`window.consoleGridNodes === %d`, gridNodes), time.Minute))
	page := read(t, tab, "page time", chromedp.Evaluate[float64](`window.consoleGridMs`))
	draw := read(t, tab, "draw time", chromedp.Evaluate[float64](`window.consoleDrawMs`))
	t.Logf("console grid of %d nodes: ms after opening the page when each part arrived: %s", gridNodes, read(t, tab, "times", chromedp.Evaluate[string](`JSON.stringify(window.consoleGridTimes)`)))
	t.Logf("console grid of %d nodes: %.0f ms from opening the page to the drawn grid, %.1f ms drawing", gridNodes, page, draw)
	screenshot(t, tab, "console-grid")
	checkGridLive(t, tab, s, r.GetId(), gridNodes, dc)
}
