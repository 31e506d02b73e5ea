package deployer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/outposthq/outpost/gateway/sshexec"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// hookEnv exports what hooks are told about the deployment.
func hookEnv(s *script, release, dir, rollout string) {
	s.set("OUTPOST_RELEASE", release)
	s.set("OUTPOST_DEPLOY_PATH", dir)
	s.set("OUTPOST_ROLLOUT", rollout)
	s.line(`export OUTPOST_RELEASE OUTPOST_DEPLOY_PATH OUTPOST_ROLLOUT`)
}

// scriptPrelude sets what every step script uses: P (deploy path), I
// (release id), R (release dir), H (hook log), and the m and h functions.
func (dep *deployment) scriptPrelude(s *script) {
	s.set("P", dep.dir)
	s.set("I", dep.job.Release.GetId())
	s.line(`R="$P/releases/$I"; T="$R.partial"; H="$P/.outpost/hook.log"`)
	s.line(markerFunc)
	s.line(hookFunc)
}

// hookStep appends a step that runs hook in dir (a constant expression such
// as "$R"), or marks the step skipped when the hook is empty. On failure
// the script exits.
func hookStep(s *script, step outpostv1.Step, dir, hook string) {
	n := strconv.Itoa(int(step))
	if hook == "" {
		s.line(`m ` + n + ` skip`)
		return
	}
	s.set("C", hook)
	s.line(`m ` + n + ` start; h ` + dir + ` "$C" || { m ` + n + ` fail; exit 1; }; m ` + n + ` ok`)
}

// activateScript verifies and unpacks the upload into releases/<id>, then
// runs before_install, stop, the switch of current, after_install and
// start, stopping at the first failure. Running them as one script saves a
// round trip per step and keeps the service's downtime, from stop to start,
// free of network waits.
func (dep *deployment) activateScript() string {
	var s script
	dep.scriptPrelude(&s)
	// The lock is the fence: a deployment whose lock another assignment
	// took over (its gateway was given up for gone) must not activate.
	s.set("L", dep.lockContent)
	s.line(`[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ] || { echo "the node's lock is no longer this deployment's: another assignment took it over" >&2; exit 1; }`)
	hookEnv(&s, dep.job.Release.GetId(), dep.dir, dep.job.RolloutID)
	// Who is activating, for a rollback that must wait for this script
	// should the gateway lose the connection to it (see waitActivation);
	// removed with the lock.
	s.line(`echo $$ >"$P/.outpost/active"`)
	a := dep.job.Release.GetArtifact()
	if !dep.facts.present {
		s.set("S", a.GetSha256())
		s.set("F", dep.uploadName())
		s.line(`m 5 start`)
		if dep.rebuiltOK {
			// The rebuild script hashed this file a moment ago, under
			// this deployment's lock, and found $S: hashing an artifact
			// of hundreds of MB again would double the node's work.
			s.line(`s=$S; m 5 note "$s (checked as the delta rebuilt it)"`)
		} else {
			s.digest(`"$T/$F"`)
			s.line(`s=${s%% *}; m 5 note "$s"`)
		}
		s.line(`[ "$s" = "$S" ] || { m 5 fail; exit 1; }`)
		s.line(`m 5 ok`)
		s.line(`m 6 start`)
		if a.GetUnpack() == outpostv1.Unpack_UNPACK_TAR {
			s.untar(`"$T/$F"`, `"$T"`, dep.art.gzip, dep.spec.TarLimits.AllowSetuid, a.GetKeepFile())
		}
		s.line(`{ printf '%s\n' "$S" >"$T/` + digestFile + `" && mv -T -- "$T" "$R"; } || { m 6 fail; exit 1; }`)
		s.line(`m 6 ok`)
	}
	h := dep.spec.Hooks
	hookStep(&s, outpostv1.Step_STEP_BEFORE_INSTALL, `"$R"`, h.BeforeInstall)
	// stop runs in the release that is running: the current one, or the
	// new one on a first deployment; OUTPOST_RELEASE names it.
	s.line(`if [ -d "$P/current/" ]; then D="$P/current"; else D="$R"; fi`)
	if old := dep.previousID(); old != "" && h.Stop != "" {
		s.set("OUTPOST_RELEASE", old)
		s.line(`[ "$D" != "$R" ] || OUTPOST_RELEASE=$I`)
	}
	hookStep(&s, outpostv1.Step_STEP_STOP, `"$D"`, h.Stop)
	s.line(`OUTPOST_RELEASE=$I`)
	s.line(`m 9 start`)
	s.line(`{ rm -f -- "$P/.current.tmp-$I" && ln -s -- "releases/$I" "$P/.current.tmp-$I" && mv -T -- "$P/.current.tmp-$I" "$P/current"; } || { m 9 fail; exit 1; }`)
	// The digest file's mtime orders releases by activation, for prune.
	s.line(`touch -c -- "$R/` + digestFile + `"; m 9 ok`)
	hookStep(&s, outpostv1.Step_STEP_AFTER_INSTALL, `"$R"`, h.AfterInstall)
	hookStep(&s, outpostv1.Step_STEP_START, `"$R"`, h.Start)
	return s.String()
}

// activateSteps are the steps activateScript reports, in order.
var activateSteps = []outpostv1.Step{
	outpostv1.Step_STEP_VERIFY,
	outpostv1.Step_STEP_UNPACK,
	outpostv1.Step_STEP_BEFORE_INSTALL,
	outpostv1.Step_STEP_STOP,
	outpostv1.Step_STEP_SWITCH,
	outpostv1.Step_STEP_AFTER_INSTALL,
	outpostv1.Step_STEP_START,
}

// activate runs activateScript and reports its steps. It returns the step
// that failed. dep.progress records how far the node got, for the
// rollback.
func (dep *deployment) activate(ctx context.Context) (outpostv1.Step, error) {
	first := outpostv1.Step_STEP_VERIFY
	if dep.facts.present {
		dep.rep.skip(ctx, outpostv1.Step_STEP_VERIFY, "already present: recorded sha256 matches")
		dep.rep.skip(ctx, outpostv1.Step_STEP_UNPACK, "already present")
		first = outpostv1.Step_STEP_BEFORE_INSTALL
	}
	return dep.runActivation(ctx, activation{
		script:       dep.activateScript(),
		switchDetail: "current -> releases/" + dep.job.Release.GetId(),
		firstStep:    first,
	})
}

// activation is what tells the layouts' activation scripts apart as
// runActivation reads their markers.
type activation struct {
	script       string
	switchDetail string         // the switch step's detail
	firstStep    outpostv1.Step // blamed when the script ends before any marker
	// inPlace: the switch moves the running release's entries out, so a
	// stop step skipped for want of a hook counts as a stop too: a
	// restore must start the old release again either way.
	inPlace bool
}

// runActivation runs an activation script and reports its steps from its
// markers. It returns the step that failed. dep.progress records how far
// the node got, for the rollback or restore.
func (dep *deployment) runActivation(ctx context.Context, a activation) (outpostv1.Step, error) {
	sent := dep.d.cfg.Now()
	res, runErr := dep.exec(ctx, a.script)
	marks := parseMarkers(res.Stdout)
	clock := newNodeClock(sent, dep.d.cfg.Now(), marks)

	var (
		open     *stepRun // started, not ended
		failed   outpostv1.Step
		failErr  error
		noteHash string
	)
	for _, m := range marks {
		at := clock.at(m)
		switch m.kind {
		case markStart:
			s := dep.rep.beginAt(m.step, at, "")
			open = &s
			switch m.step {
			case outpostv1.Step_STEP_STOP:
				dep.advance(progressStopped)
			case outpostv1.Step_STEP_SWITCH:
				// A switch disturbs the service whether or not a stop hook
				// ran before it: a failure from here on is rolled back.
				dep.advance(progressSwitched)
			}
		case markNote:
			noteHash = m.label
		case markSkip:
			dep.rep.endAt(ctx, dep.rep.beginAt(m.step, at, ""), at, nil, "no hook")
			if a.inPlace && m.step == outpostv1.Step_STEP_STOP {
				dep.advance(progressStopped)
			}
		case markOK, markFail:
			if open == nil || open.step != m.step {
				continue
			}
			var err error
			detail := ""
			if m.kind == markFail {
				err = dep.activateError(m.step, res, noteHash)
				failed, failErr = m.step, err
			} else if m.step == outpostv1.Step_STEP_VERIFY {
				detail = "sha256 " + noteHash
			} else if m.step == outpostv1.Step_STEP_SWITCH {
				detail = a.switchDetail
			}
			dep.rep.endAt(ctx, *open, at, err, detail)
			open = nil
		}
	}
	if failErr != nil {
		return failed, failErr
	}
	// Ended without a fail marker: the connection dropped, ctx ended, or
	// the script died some other way. Blame the step under way.
	if runErr != nil || res.Err() != nil {
		err := runErr
		if err == nil {
			err = res.Err()
		}
		step := a.firstStep
		if open != nil {
			step = open.step
			err = fmt.Errorf("%s: %w", stepName(step), err)
			dep.rep.endAt(ctx, *open, dep.d.cfg.Now(), err, "")
		} else if last := lastMarked(marks); last != 0 {
			step = nextActivateStep(last)
			err = fmt.Errorf("after %s: %w", stepName(last), err)
		} else {
			err = fmt.Errorf("activate: %w", err)
		}
		// With the connection gone the script may have gone on past the
		// last marker we saw (until its next write fails): assume the
		// service was stopped and the release switched, so that the
		// rollback or restore, which is idempotent, undoes both.
		if runErr != nil {
			dep.advance(progressOrphaned)
		}
		return step, err
	}
	if dep.progress < progressSwitched {
		return outpostv1.Step_STEP_SWITCH, errors.New("activate: the script ended without switching the release")
	}
	return 0, nil
}

// activateError explains why step failed, from the script's output.
func (dep *deployment) activateError(step outpostv1.Step, res sshexec.Result, nodeHash string) error {
	if step == outpostv1.Step_STEP_VERIFY && nodeHash != "" {
		return &VerifyError{Want: dep.job.Release.GetArtifact().GetSha256(), Node: nodeHash, Sent: dep.sentSHA256}
	}
	msg := stderrOf(res.Stderr, step, "")
	switch step {
	case outpostv1.Step_STEP_BEFORE_INSTALL, outpostv1.Step_STEP_STOP, outpostv1.Step_STEP_AFTER_INSTALL, outpostv1.Step_STEP_START:
		if msg == "" {
			return fmt.Errorf("%s hook failed (no output)", stepName(step))
		}
		return fmt.Errorf("%s hook failed: %s", stepName(step), tail(msg, 1024))
	}
	if msg == "" {
		msg = "no output"
	}
	return fmt.Errorf("%s: %s", stepName(step), tail(msg, 1024))
}

// lastMarked returns the last step with any marker, or 0.
func lastMarked(marks []marker) outpostv1.Step {
	if len(marks) == 0 {
		return 0
	}
	return marks[len(marks)-1].step
}

// nextActivateStep returns the step after s in activateSteps.
func nextActivateStep(s outpostv1.Step) outpostv1.Step {
	for i, x := range activateSteps {
		if x == s && i+1 < len(activateSteps) {
			return activateSteps[i+1]
		}
	}
	return s
}

// tail returns the last n bytes of s, marked as cut.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = strings.ToValidUTF8(s[len(s)-n:], "")
	return "..." + s
}
