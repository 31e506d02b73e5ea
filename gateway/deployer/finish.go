package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/outposthq/outpost/gateway/sshexec"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// historyEntry is one line of P/.outpost/history. Release is what is
// current after the action, Previous what was current before it.
type historyEntry struct {
	Time     time.Time `json:"time"`
	Rollout  string    `json:"rollout"`
	Owner    string    `json:"owner"`
	Epoch    int64     `json:"epoch"`
	Action   string    `json:"action"` // "activate" or "rollback"
	Release  string    `json:"release"`
	Previous string    `json:"previous"`
	Result   string    `json:"result"` // "succeeded" or "failed: <why>"
}

func (dep *deployment) historyEntry(action, release, previous, result string) historyEntry {
	if r := releaseOf(release); r != "" {
		release = r
	}
	if r := releaseOf(previous); r != "" {
		previous = r
	}
	return historyEntry{
		Time: dep.d.cfg.Now().UTC(), Rollout: dep.job.RolloutID, Owner: dep.job.Owner, Epoch: dep.job.Epoch,
		Action: action, Release: release, Previous: previous, Result: result,
	}
}

// finishPlan is what the last script of a deployment does besides
// unlocking. Every part runs even when an earlier one fails.
type finishPlan struct {
	pruneStep bool           // run the prune step (success only)
	prune     []string       // release ids prune removes
	history   []historyEntry // lines to append
	remove    []string       // absolute paths this deployment created and must remove
}

// finish ends a successful deployment: prune, history, unlock, in one round
// trip. Their failures are reported as failed steps and logged, but do not
// change the outcome: the new release is current and healthy.
func (dep *deployment) finish(ctx context.Context) Result {
	res := dep.result(outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.Step_STEP_UNLOCK, nil)
	ctx, cancel := dep.cleanupContext(ctx, 0)
	defer cancel()
	plan := finishPlan{
		pruneStep: true,
		prune:     pruneSet(dep.facts.releases, dep.job.Release.GetId(), releaseOf(dep.facts.current), dep.spec.KeepReleases),
		history:   []historyEntry{dep.historyEntry("activate", dep.job.Release.GetId(), dep.facts.current, "succeeded")},
	}
	if err := dep.unlock(ctx, plan); err != nil {
		dep.log.Warn("deployment succeeded but its cleanup did not", "error", err)
	}
	return res
}

// pruneSet returns the releases to remove: all but the newest keep of
// releases (newest first) and the new release, never the new release or
// the previous one.
func pruneSet(releases []string, newID, previous string, keep int) []string {
	order := []string{newID}
	for _, r := range releases {
		if r != newID {
			order = append(order, r)
		}
	}
	var out []string
	for i, r := range order {
		if i < keep || r == newID || r == previous {
			continue
		}
		out = append(out, r)
	}
	return out
}

// finishScript prunes, appends history, removes what plan says and
// releases the lock when it still holds our content.
func (dep *deployment) finishScript(plan finishPlan) (string, error) {
	var s script
	s.set("P", dep.dir)
	s.set("L", dep.lockContent)
	s.line(markerFunc)
	if plan.pruneStep {
		s.line(`m 13 start; e=0`)
		for _, id := range plan.prune {
			s.set("X", id)
			s.line(`rm -rf -- "$P/releases/$X" || e=1`)
		}
		s.line(`if [ $e = 0 ]; then m 13 ok; else m 13 fail; fi`)
	}
	if len(plan.history) > 0 {
		s.line(`m 14 start; e=0`)
		for _, h := range plan.history {
			b, err := json.Marshal(h)
			if err != nil {
				return "", err
			}
			s.set("X", string(b))
			s.line(`printf '%s\n' "$X" >>"$P/.outpost/history" || e=1`)
		}
		s.line(`if [ $e = 0 ]; then m 14 ok; else m 14 fail; fi`)
	}
	// What this deployment created is removed, and the lock released, only
	// while the lock is still ours: otherwise another deployment may own
	// those paths now.
	s.line(`m 15 start; e=0`)
	s.line(`if [ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ]; then`)
	for _, p := range plan.remove {
		if !strings.HasPrefix(p, dep.dir+"/releases/") {
			return "", fmt.Errorf("refusing to remove %s: outside %s/releases", p, dep.dir)
		}
		s.set("X", p)
		s.line(`  rm -rf -- "$X" || e=1`)
	}
	s.line(`  rm -f -- "$P/.outpost/active" "$P/.outpost/lock" || e=1`)
	s.line(`else echo "the lock is not ours (any more): left as it is" >&2; e=1; fi`)
	s.line(`if [ $e = 0 ]; then m 15 ok; else m 15 fail; exit 1; fi`)
	return s.String(), nil
}

// unlock runs the finish script and reports its steps. It returns an error
// when the lock may still be held or something could not be removed.
func (dep *deployment) unlock(ctx context.Context, plan finishPlan) error {
	cmd, err := dep.finishScript(plan)
	if err != nil {
		dep.rep.end(ctx, dep.rep.begin(outpostv1.Step_STEP_UNLOCK), err, "")
		return err
	}
	sent := dep.d.cfg.Now()
	res, runErr := dep.execRetry(ctx, cmd)
	marks := parseMarkers(res.Stdout)
	clock := newNodeClock(sent, dep.d.cfg.Now(), marks)
	var (
		open     *stepRun
		unlocked bool
		errs     []error
	)
	for _, m := range marks {
		at := clock.at(m)
		switch m.kind {
		case markStart:
			s := dep.rep.beginAt(m.step, at, "")
			open = &s
		case markOK, markFail:
			if open == nil || open.step != m.step {
				continue
			}
			var err error
			detail := finishDetail(m.step, plan, dep.dir)
			if m.kind == markFail {
				msg := stderrOf(res.Stderr, m.step, "")
				if msg == "" {
					msg = "no output"
				}
				err = fmt.Errorf("%s: %s", stepName(m.step), tail(msg, 1024))
				errs = append(errs, err)
			} else if m.step == outpostv1.Step_STEP_UNLOCK {
				unlocked = true
			}
			dep.rep.endAt(ctx, *open, at, err, detail)
			open = nil
		}
	}
	if !unlocked && len(errs) == 0 {
		if runErr == nil {
			runErr = res.Err()
		}
		if runErr == nil {
			runErr = errors.New("the unlock script ended early")
		}
		err := fmt.Errorf("unlock: %w", runErr)
		if open != nil {
			dep.rep.endAt(ctx, *open, dep.d.cfg.Now(), err, "")
		} else {
			dep.rep.end(ctx, dep.rep.begin(outpostv1.Step_STEP_UNLOCK), err, "")
		}
		errs = append(errs, err)
	}
	if unlocked {
		dep.advance(progressUnlocked)
	}
	return errors.Join(errs...)
}

// finishDetail describes a finish step for its event.
func finishDetail(step outpostv1.Step, plan finishPlan, dir string) string {
	switch step {
	case outpostv1.Step_STEP_PRUNE:
		if len(plan.prune) == 0 {
			return "nothing to prune"
		}
		return "removed " + strings.Join(plan.prune, ", ")
	case outpostv1.Step_STEP_HISTORY:
		return fmt.Sprintf("%d line(s)", len(plan.history))
	case outpostv1.Step_STEP_UNLOCK:
		var rel []string
		for _, p := range plan.remove {
			rel = append(rel, strings.TrimPrefix(p, path.Join(dir, "releases")+"/"))
		}
		if len(rel) > 0 {
			return "removed " + strings.Join(rel, ", ")
		}
	}
	return ""
}

// sshResult is the result of a remote command.
type sshResult = sshexec.Result
