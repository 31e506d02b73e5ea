package deployer

import (
	"context"
	"fmt"
	"path"

	"go.opentelemetry.io/otel/trace"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// This file is where a node is put back.
//
//   - abandon: the failure came before the stop hook ran or current was
//     switched (progress.disturbed). The service was
//     never touched, so removing what this deployment created (the partial
//     release, or the new release directory) and unlocking restores the
//     node exactly: FAILED.
//   - rollback: the stop hook may have run. With a previous release:
//     stop the new one, switch current back, start the previous one and
//     health-check it: ROLLED_BACK, or ROLLBACK_FAILED when any of that
//     fails. Without one (first deployment): stop the new release, remove
//     current and the new release: FAILED, the node holds no release, as
//     before.
//
// Both run on a fresh context when ctx has ended, and reconnect once when
// the connection dropped: a node is cleaned up whenever it can be reached.
//
//   - Rollback: the node was deployed fine but the rollout undoes it (a
//     failed bake, an undo, a rejected validation): a job of its own,
//     under the node's lock, back to a release still on the node
//     (rollbackTo; in place, rollbackInplace in inplace.go).

// abandon cleans up after a failure before the stop hook and unlocks.
func (dep *deployment) abandon(ctx context.Context, step outpostv1.Step, cause error) Result {
	res := dep.result(outpostv1.NodeState_NODE_STATE_FAILED, step, cause)
	if !dep.progress.holdsLock() {
		// Nothing was created without the lock, and the lock is not ours.
		return res
	}
	ctx, cancel := dep.cleanupContext(ctx, 0)
	defer cancel()
	var cleanup []string
	switch {
	case dep.created:
		// The release id was not on the node before (else created would be
		// false), so its directory is this deployment's, partial or renamed.
		cleanup = append(cleanup, dep.partialDir(), dep.releaseDir())
	case dep.progress == progressLockLost:
		cleanup = append(cleanup, dep.partialDir())
	}
	if err := dep.unlock(ctx, finishPlan{remove: cleanup}); err != nil {
		res.Err = fmt.Errorf("%w; cleanup failed, the node may keep a partial release and its lock: %w", cause, err)
	}
	return res
}

// rollback restores the node after a failure that may have disturbed the
// service. cause is the failure, at step.
func (dep *deployment) rollback(ctx context.Context, step outpostv1.Step, cause error) Result {
	ctx, cancel := dep.cleanupContext(ctx, dep.spec.Health.Timeout)
	defer cancel()
	prev := dep.facts.current
	if prev == "" || !dep.facts.currentIsDir {
		// No previous release to return to (a dangling current counts as
		// none): back to no release at all.
		return dep.rollbackFirst(ctx, step, cause)
	}
	res := dep.result(outpostv1.NodeState_NODE_STATE_ROLLED_BACK, step, nil)
	rbErr := dep.rollbackRun(ctx)
	if rbErr == nil && dep.spec.Health.enabled() {
		s := dep.rep.begin(outpostv1.Step_STEP_ROLLBACK)
		s.label = "health " + res.Previous
		var detail string
		detail, rbErr = dep.waitHealthy(ctx, path.Join(dep.dir, "current"), res.Previous)
		dep.rep.end(ctx, s, rbErr, detail)
	}
	hist := []historyEntry{
		dep.historyEntry("activate", dep.job.Release.GetId(), prev, "failed: "+cause.Error()),
	}
	if rbErr != nil {
		res.State, res.Step = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED, outpostv1.Step_STEP_ROLLBACK
		res.Err = fmt.Errorf("%w; ROLLBACK to %s FAILED: %w", cause, res.Previous, rbErr)
		hist = append(hist, dep.historyEntry("rollback", prev, dep.job.Release.GetId(), "failed: "+rbErr.Error()))
	} else {
		res.Err = fmt.Errorf("%w; rolled back to %s", cause, res.Previous)
		hist = append(hist, dep.historyEntry("rollback", prev, dep.job.Release.GetId(), "succeeded"))
	}
	if err := dep.unlock(ctx, finishPlan{history: hist}); err != nil {
		res.Err = fmt.Errorf("%w; unlock failed: %w", res.Err, err)
	}
	return res
}

// rollbackScript stops the new release, points current back at the
// previous target (as it was written) and starts it. Each part is
// idempotent, so it is right however far the activation got. A failed
// stop does not keep the previous release from being started.
func (dep *deployment) rollbackScript() string {
	var s script
	dep.scriptPrelude(&s)
	hookEnv(&s, dep.job.Release.GetId(), dep.dir, dep.job.RolloutID)
	s.set("V", dep.facts.current)
	dep.waitActivation(&s)
	h := dep.spec.Hooks
	if h.Stop != "" {
		s.set("C", h.Stop)
		s.line(`m 16 start stop; if h "$R" "$C"; then m 16 ok; else m 16 fail; fi`)
	}
	s.line(`m 16 start switch`)
	s.line(`{ rm -f -- "$P/.current.tmp-$I" && ln -s -- "$V" "$P/.current.tmp-$I" && mv -T -- "$P/.current.tmp-$I" "$P/current"; } || { m 16 fail; exit 1; }`)
	s.line(`m 16 ok`)
	if h.Start != "" {
		s.set("OUTPOST_RELEASE", dep.previousID())
		s.set("C", h.Start)
		s.line(`m 16 start start; h "$P/current" "$C" || { m 16 fail; exit 1; }; m 16 ok`)
	}
	return s.String()
}

// rollbackRun runs rollbackScript and reports its parts as ROLLBACK steps.
func (dep *deployment) rollbackRun(ctx context.Context) error {
	prev := dep.previousID()
	labels := map[string]string{
		"wait":   "wait for the interrupted activation",
		"stop":   "stop " + dep.job.Release.GetId(),
		"switch": "switch current -> " + dep.facts.current,
		"start":  "start " + prev,
	}
	return dep.runRollbackScript(ctx, dep.rollbackScript(), labels)
}

// rollbackFirst undoes a first deployment: no previous release to return
// to, so the node goes back to having none.
func (dep *deployment) rollbackFirst(ctx context.Context, step outpostv1.Step, cause error) Result {
	res := dep.result(outpostv1.NodeState_NODE_STATE_FAILED, step, cause)
	labels := map[string]string{
		"wait":   "wait for the interrupted activation",
		"stop":   "stop " + dep.job.Release.GetId(),
		"remove": "remove current",
	}
	rbErr := dep.runRollbackScript(ctx, dep.rollbackFirstScript(), labels)
	var cleanup []string
	if dep.created {
		cleanup = append(cleanup, dep.partialDir(), dep.releaseDir())
	}
	hist := []historyEntry{dep.historyEntry("activate", dep.job.Release.GetId(), "", "failed: "+cause.Error())}
	if rbErr != nil {
		res.State, res.Step = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED, outpostv1.Step_STEP_ROLLBACK
		res.Err = fmt.Errorf("%w; removing the failed first release FAILED: %w", cause, rbErr)
		hist = append(hist, dep.historyEntry("rollback", "", dep.job.Release.GetId(), "failed: "+rbErr.Error()))
		cleanup = nil // keep the evidence; current may still point at it
	} else {
		hist = append(hist, dep.historyEntry("rollback", "", dep.job.Release.GetId(), "succeeded"))
	}
	if err := dep.unlock(ctx, finishPlan{history: hist, remove: cleanup}); err != nil {
		res.Err = fmt.Errorf("%w; cleanup failed: %w", res.Err, err)
	}
	return res
}

// waitActivation makes a rollback script wait, for a bounded time, until an
// activation script whose connection dropped has ended. Over a half-dead
// connection sshd may not notice the loss for a while, and that script
// would go on stopping, switching and starting while the rollback does the
// opposite. It ends at its next step boundary at the latest, when its
// marker cannot be written; a hook that hangs is waited for 20 s, then the
// rollback goes ahead and says so.
func (dep *deployment) waitActivation(s *script) {
	if dep.progress != progressOrphaned {
		return
	}
	s.line(`m 16 start wait; n=0; a=; read -r a <"$P/.outpost/active" 2>/dev/null`)
	s.line(`while [ -n "$a" ] && [ $n -lt 100 ] && kill -0 "$a" 2>/dev/null; do sleep 0.2; n=$((n+1)); done`)
	s.line(`if [ -n "$a" ] && kill -0 "$a" 2>/dev/null; then echo "the interrupted activation (pid $a) still runs; rolling back anyway" >&2; m 16 fail; else m 16 ok; fi`)
}

// rollbackFirstScript stops the new release and removes current when it
// points at it; the release directory goes with the unlock.
func (dep *deployment) rollbackFirstScript() string {
	var s script
	dep.scriptPrelude(&s)
	hookEnv(&s, dep.job.Release.GetId(), dep.dir, dep.job.RolloutID)
	dep.waitActivation(&s)
	if h := dep.spec.Hooks.Stop; h != "" {
		s.set("C", h)
		s.line(`m 16 start stop; if h "$R" "$C"; then m 16 ok; else m 16 fail; fi`)
	}
	s.line(`m 16 start remove`)
	// Only a current that points at this release is ours to remove.
	s.line(`{ rm -f -- "$P/.current.tmp-$I"; if [ "$(readlink -- "$P/current")" = "releases/$I" ]; then rm -f -- "$P/current"; fi; } || { m 16 fail; exit 1; }`)
	s.line(`m 16 ok`)
	return s.String()
}

// runRollbackScript runs a rollback script, reconnecting once if the
// connection is gone, and reports each part (named by its marker label)
// as a STEP_ROLLBACK event. Its error is the first failed part's, or the
// transport's.
func (dep *deployment) runRollbackScript(ctx context.Context, cmd string, labels map[string]string) error {
	sent := dep.d.cfg.Now()
	res, runErr := dep.execRetry(ctx, cmd)
	marks := parseMarkers(res.Stdout)
	clock := newNodeClock(sent, dep.d.cfg.Now(), marks)
	var (
		open     *stepRun
		part     string // label of the open part
		decisive error  // first failure of a part the outcome depends on
	)
	for _, m := range marks {
		if m.step != outpostv1.Step_STEP_ROLLBACK {
			continue
		}
		at := clock.at(m)
		switch m.kind {
		case markStart:
			s := dep.rep.beginAt(m.step, at, labels[m.label])
			open, part = &s, m.label
		case markOK, markFail:
			if open == nil {
				continue
			}
			var err error
			if m.kind == markFail {
				msg := stderrOf(res.Stderr, outpostv1.Step_STEP_ROLLBACK, part)
				if msg == "" {
					msg = "no output"
				}
				err = fmt.Errorf("%s: %s", open.label, tail(msg, 1024))
				// A failed wait or stop is reported but does not decide
				// the rollback: the previous release is switched back and
				// started anyway, and the health check has the last word.
				if decisive == nil && !tolerated[part] {
					decisive = err
				}
			}
			dep.rep.endAt(ctx, *open, at, err, "")
			open = nil
		}
	}
	if runErr == nil {
		runErr = res.Err()
	}
	if runErr != nil && decisive == nil {
		decisive = fmt.Errorf("rollback script: %w", runErr)
		if open != nil {
			dep.rep.endAt(ctx, *open, dep.d.cfg.Now(), decisive, "")
		} else if len(marks) == 0 {
			dep.rep.end(ctx, dep.rep.begin(outpostv1.Step_STEP_ROLLBACK), decisive, "")
		}
	}
	return decisive
}

// tolerated are the rollback parts whose failure does not fail the rollback.
var tolerated = map[string]bool{"wait": true, "stop": true}

// execRetry runs an idempotent cleanup command, reconnecting and trying
// once more when the connection turns out to be gone.
func (dep *deployment) execRetry(ctx context.Context, cmd string) (sshResult, error) {
	res, err := dep.exec(ctx, cmd)
	if err != nil && dep.broken && !dep.redialed && ctx.Err() == nil {
		return dep.exec(ctx, cmd)
	}
	return res, err
}

// Rollback returns job's node from job.Release (the release current now,
// deployed fine earlier) to the release to, which must still be on the
// node; to "" means the node had none, so the release is stopped and
// current removed. Under the node's lock: stop, switch current back,
// start, health check, history, unlock; reported as STEP_CONNECT,
// STEP_LOCK and STEP_ROLLBACK parts. SUCCEEDED: rolled back and healthy
// (Release is to); FAILED: nothing was changed (to is gone, the node is
// locked); ROLLBACK_FAILED: it broke on the way. The artifact is not
// needed.
func (d *Deployer) Rollback(ctx context.Context, job Job, to string, emit func(*outpostv1.NodeStepEvent)) Result {
	ctx, dep, end := d.auxDeployment(ctx, "deployer.rollback", job, emit)
	defer end()
	res := dep.rollbackTo(ctx, to)
	if res.State != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		telemetry.Fail(trace.SpanFromContext(ctx), res.Err)
		dep.log.Warn("rollback failed", "state", res.State.String(), "to", to, "error", res.Err)
	} else {
		dep.log.Info("node rolled back", "to", to)
	}
	return res
}

func (dep *deployment) rollbackTo(ctx context.Context, to string) Result {
	fail := func(state outpostv1.NodeState, step outpostv1.Step, err error) Result {
		return Result{State: state, Step: step, Err: err, Release: dep.job.Release.GetId(), Previous: to}
	}
	s := dep.rep.begin(outpostv1.Step_STEP_CONNECT)
	err := dep.validateAux()
	if err == nil && to != "" && !validReleaseID(to) {
		err = fmt.Errorf("%w: release id %q to roll back to is not valid", ErrInvalidJob, to)
	}
	if err == nil {
		err = dep.connectAux(ctx)
	}
	dep.rep.end(ctx, s, err, "")
	if err != nil {
		return fail(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_CONNECT, err)
	}
	defer func() { dep.remote.Close() }()
	if dep.spec.Layout == LayoutInplace {
		return dep.rollbackInplace(ctx, to)
	}

	s = dep.rep.begin(outpostv1.Step_STEP_LOCK)
	present, err := dep.lockForRollback(ctx, to)
	dep.rep.end(ctx, s, err, "")
	if err != nil {
		if dep.progress.holdsLock() {
			if uerr := dep.unlock(ctx, finishPlan{}); uerr != nil {
				err = fmt.Errorf("%w; unlock failed: %w", err, uerr)
			}
		}
		return fail(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_LOCK, err)
	}
	if to != "" && !present {
		err := fmt.Errorf("release %s is no longer on the node (%s/releases); nothing was changed", to, dep.dir)
		if uerr := dep.unlock(ctx, finishPlan{}); uerr != nil {
			err = fmt.Errorf("%w; unlock failed: %w", err, uerr)
		}
		return fail(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_ROLLBACK, err)
	}

	ctx, cancel := dep.cleanupContext(ctx, dep.spec.Health.Timeout)
	defer cancel()
	var rbErr error
	if to == "" {
		rbErr = dep.runRollbackScript(ctx, dep.rollbackFirstScript(), map[string]string{
			"stop": "stop " + dep.job.Release.GetId(), "remove": "remove current",
		})
	} else {
		dep.facts.current = "releases/" + to
		dep.facts.currentIsDir = true
		rbErr = dep.rollbackRun(ctx)
		if rbErr == nil && dep.spec.Health.enabled() {
			hs := dep.rep.begin(outpostv1.Step_STEP_ROLLBACK)
			hs.label = "health " + to
			var detail string
			detail, rbErr = dep.waitHealthy(ctx, path.Join(dep.dir, "current"), to)
			dep.rep.end(ctx, hs, rbErr, detail)
		}
	}
	result := "succeeded"
	if rbErr != nil {
		result = "failed: " + rbErr.Error()
	}
	hist := []historyEntry{dep.historyEntry("rollback", to, dep.job.Release.GetId(), result)}
	uerr := dep.unlock(ctx, finishPlan{history: hist})
	if rbErr != nil {
		err := fmt.Errorf("ROLLBACK to %s FAILED: %w", orNone(to), rbErr)
		if uerr != nil {
			err = fmt.Errorf("%w; unlock failed: %w", err, uerr)
		}
		return fail(outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED, outpostv1.Step_STEP_ROLLBACK, err)
	}
	if uerr != nil {
		dep.log.Warn("rolled back, but unlocking failed", "error", uerr)
	}
	return Result{State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, Step: outpostv1.Step_STEP_UNLOCK, Release: to, Previous: dep.job.Release.GetId()}
}

func orNone(id string) string {
	if id == "" {
		return "no release"
	}
	return id
}

// rollbackLockScript guards the deploy path and takes the node's lock as
// the deploy lock script does, and reports current and whether
// releases/<to> is there. It creates nothing else.
func (dep *deployment) rollbackLockScript(to string) string {
	var s script
	s.set("P", dep.dir)
	s.set("L", dep.lockContent)
	s.set("V", to)
	takeLock(&s, false, ".outpost")
	s.line(`echo @current`)
	s.line(`if [ -L "$P/current" ]; then printf 'link %s\n' "$(readlink -- "$P/current")"; [ ! -d "$P/current/" ] || echo dir; elif [ -e "$P/current" ]; then echo notlink; fi`)
	s.line(`if [ -n "$V" ] && [ -d "$P/releases/$V" ]; then echo @present; fi`)
	return s.String()
}

// lockForRollback takes the lock and reads the facts a rollback needs.
func (dep *deployment) lockForRollback(ctx context.Context, to string) (present bool, err error) {
	sections, err := dep.runLockScript(ctx, dep.rollbackLockScript(to))
	if err != nil {
		return false, err
	}
	facts, err := parseFacts(sections)
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", dep.lockPath(), err)
	}
	if facts.currentNotLink {
		return false, fmt.Errorf("%s/current exists and is not a symlink", dep.dir)
	}
	dep.facts = facts
	_, present = sections["present"]
	return present, nil
}
