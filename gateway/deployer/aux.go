package deployer

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The smaller jobs a rollout asks of a node besides deploying (the
// control plane's AssignmentKind): one health check during a bake, a hook
// on a blue/green switch node, and the rollback of a node that was
// deployed fine but failed its bake. They report step events like
// Deploy, and never touch a node's releases without its lock.

// CheckHealth checks the health of the release current on job's node
// once, as job.Spec.Health says, and changes nothing: an HTTP or TCP check
// goes from the gateway to the node, a command check runs on the node in
// <path>/current. It reports one STEP_HEALTH. SUCCEEDED means healthy (or
// no check configured), FAILED not; the artifact is not needed.
func (d *Deployer) CheckHealth(ctx context.Context, job Job, emit func(*outpostv1.NodeStepEvent)) Result {
	ctx, dep, end := d.auxDeployment(ctx, "deployer.check_health", job, emit)
	defer end()
	s := dep.rep.begin(outpostv1.Step_STEP_HEALTH)
	detail, err := dep.checkOnce(ctx)
	dep.rep.end(ctx, s, err, detail)
	if err != nil {
		return Result{State: outpostv1.NodeState_NODE_STATE_FAILED, Step: outpostv1.Step_STEP_HEALTH, Err: err}
	}
	return Result{State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, Step: outpostv1.Step_STEP_HEALTH}
}

func (dep *deployment) checkOnce(ctx context.Context) (string, error) {
	if err := dep.validateAux(); err != nil {
		return "", err
	}
	h := dep.spec.Health
	if !h.enabled() {
		return "no health check", nil
	}
	dir := ""
	if h.Command != "" {
		if err := dep.connectAux(ctx); err != nil {
			return "", err
		}
		defer dep.remote.Close()
		dir = path.Join(dep.dir, "current")
		if dep.spec.Layout == LayoutInplace {
			dir = dep.dir
		}
	}
	check, what := dep.healthCheck(dir, dep.job.Release.GetId())
	actx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	if err := check(actx); err != nil {
		return "", fmt.Errorf("health %s: %w", what, err)
	}
	return what + " healthy", nil
}

// HookJob is a shell command to run on a node: a blue/green traffic
// switch on a load balancer.
type HookJob struct {
	// Node runs the hook, in its login's home directory.
	Node *outpostv1.Node
	// RolloutID and Owner identify who asked, for events and logs.
	RolloutID, Owner string
	// Command runs through the login shell ($SHELL -c); it must pass the
	// hook deny list.
	Command string
	// Env is exported to the hook; names are OUTPOST_ and upper-case
	// letters, digits or '_'.
	Env map[string]string
}

// hookEnvName is what RunHook exports.
var hookEnvName = regexp.MustCompile(`^OUTPOST_[A-Z0-9_]{1,64}$`)

// RunHook connects to job's node and runs job.Command there, reporting
// STEP_CONNECT and STEP_TRAFFIC_SWITCH. The hook's output goes to a
// temporary file (a daemon it leaves running cannot hold the session), the
// end of which is in the error when it fails. SUCCEEDED means it exited 0.
func (d *Deployer) RunHook(ctx context.Context, job HookJob, emit func(*outpostv1.NodeStepEvent)) Result {
	if emit == nil {
		emit = func(*outpostv1.NodeStepEvent) {}
	}
	log := d.cfg.Logger.With("node_id", job.Node.GetId(), "rollout_id", job.RolloutID)
	ctx, span := d.cfg.Tracer.Start(ctx, "deployer.run_hook", trace.WithAttributes(
		attribute.String("outpost.node_id", job.Node.GetId()),
		attribute.String("outpost.rollout_id", job.RolloutID),
	))
	defer span.End()
	rep := &reporter{nodeID: job.Node.GetId(), rolloutID: job.RolloutID, emit: emit, tracer: d.cfg.Tracer, log: log, now: d.cfg.Now}
	fail := func(step outpostv1.Step, err error) Result {
		span.SetStatus(codes.Error, err.Error())
		log.Warn("hook failed", "step", stepName(step), "error", err)
		return Result{State: outpostv1.NodeState_NODE_STATE_FAILED, Step: step, Err: err}
	}

	s := rep.begin(outpostv1.Step_STEP_CONNECT)
	var remote Remote
	err := checkHookJob(job)
	if err == nil {
		remote, err = d.cfg.Dial(ctx, job.Node)
		if err == nil && remote == nil {
			err = errors.New("Config.Dial returned no connection")
		}
		if err != nil {
			err = fmt.Errorf("connect %s: %w", job.Node.GetAddress(), err)
		}
	}
	rep.end(ctx, s, err, "")
	if err != nil {
		return fail(outpostv1.Step_STEP_CONNECT, err)
	}
	defer remote.Close()

	s = rep.begin(outpostv1.Step_STEP_TRAFFIC_SWITCH)
	res, err := remote.Run(ctx, hookScript(job))
	if err == nil {
		if rerr := res.Err(); rerr != nil {
			msg := strings.TrimSpace(string(res.Stderr))
			if msg == "" {
				msg = "no output"
			}
			err = fmt.Errorf("hook %s: %w: %s", firstWord(job.Command), rerr, tail(msg, 1024))
		}
	} else {
		err = fmt.Errorf("hook: %w", err)
	}
	rep.end(ctx, s, err, envDetail(job.Env))
	if err != nil {
		return fail(outpostv1.Step_STEP_TRAFFIC_SWITCH, err)
	}
	log.Info("hook ran", "env", envDetail(job.Env))
	return Result{State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, Step: outpostv1.Step_STEP_TRAFFIC_SWITCH}
}

func checkHookJob(job HookJob) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidJob, fmt.Sprintf(format, args...))
	}
	if job.Node.GetId() == "" || job.Node.GetAddress() == "" {
		return invalid("node id and address are required")
	}
	if strings.TrimSpace(job.Command) == "" {
		return invalid("no hook command")
	}
	if err := checkHook(job.Command); err != nil {
		return invalid("hook: %v", err)
	}
	for k, v := range job.Env {
		if !hookEnvName.MatchString(k) {
			return invalid("hook environment name %q must match %s", k, hookEnvName)
		}
		if strings.ContainsAny(v, "\x00") {
			return invalid("hook environment %s holds a NUL byte", k)
		}
	}
	return nil
}

// hookScript runs the hook with its environment, its output kept off the
// session's pipes.
func hookScript(job HookJob) string {
	var s script
	names := make([]string, 0, len(job.Env))
	for k := range job.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.set(k, job.Env[k])
		s.line(`export ` + k)
	}
	s.set("C", job.Command)
	s.line(`o=$(mktemp) || exit 70`)
	s.line(`cd && "${SHELL:-/bin/sh}" -c "$C" </dev/null >"$o" 2>&1; r=$?`)
	s.line(`[ "$r" = 0 ] || tail -c 2048 -- "$o" >&2; rm -f -- "$o"; exit "$r"`)
	return s.String()
}

func firstWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// envDetail is the hook's OUTPOST_COLOR for event details.
func envDetail(env map[string]string) string {
	if c, ok := env["OUTPOST_COLOR"]; ok {
		return "traffic to " + c
	}
	return ""
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
		trace.SpanFromContext(ctx).SetStatus(codes.Error, res.Err.Error())
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
		if dep.locked {
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
	guard(&s, false)
	s.line(`mkdir -p -- "$P/.outpost" || exit 70`)
	s.line(`if ! (set -C; printf '%s' "$L" >"$P/.outpost/lock"); then`)
	s.line(`  if [ -e "$P/.outpost/lock" ]; then echo @held; cat -- "$P/.outpost/lock"; exit 75; fi`)
	s.line(`  exit 70`)
	s.line(`fi`)
	s.line(`echo @locked`)
	s.line(`echo @current`)
	s.line(`if [ -L "$P/current" ]; then printf 'link %s\n' "$(readlink -- "$P/current")"; [ ! -d "$P/current/" ] || echo dir; elif [ -e "$P/current" ]; then echo notlink; fi`)
	s.line(`if [ -n "$V" ] && [ -d "$P/releases/$V" ]; then echo @present; fi`)
	return s.String()
}

// lockForRollback takes the lock and reads the facts a rollback needs.
func (dep *deployment) lockForRollback(ctx context.Context, to string) (present bool, err error) {
	res, err := dep.exec(ctx, dep.rollbackLockScript(to))
	sections := splitSections(res.Stdout)
	if _, ok := sections["locked"]; ok {
		dep.locked = true
	}
	if err != nil {
		dep.locked = true // it may have; unlocking checks the content
		return false, fmt.Errorf("lock: %w", err)
	}
	if sec, ok := sections["refused"]; ok && res.ExitCode == exitRefused {
		return false, dep.refusedError(sec)
	}
	if res.ExitCode == exitLockHeld {
		return false, dep.lockedError(strings.TrimSpace(sections["held"]))
	}
	if err := res.Err(); err != nil {
		return false, fmt.Errorf("lock %s: %w", dep.lockPath(), err)
	}
	if !dep.locked {
		return false, fmt.Errorf("lock %s: the lock script ended without taking the lock", dep.lockPath())
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

// auxDeployment prepares a deployment value for CheckHealth and Rollback,
// in its own span; call end when done.
func (d *Deployer) auxDeployment(ctx context.Context, span string, job Job, emit func(*outpostv1.NodeStepEvent)) (context.Context, *deployment, func()) {
	if emit == nil {
		emit = func(*outpostv1.NodeStepEvent) {}
	}
	log := d.cfg.Logger.With("node_id", job.Node.GetId(), "rollout_id", job.RolloutID, "release", job.Release.GetId())
	ctx, sp := d.cfg.Tracer.Start(ctx, span, trace.WithAttributes(
		attribute.String("outpost.node_id", job.Node.GetId()),
		attribute.String("outpost.rollout_id", job.RolloutID),
		attribute.String("outpost.release", job.Release.GetId()),
	))
	dep := &deployment{
		d:   d,
		job: job,
		log: log,
		rep: &reporter{
			nodeID: job.Node.GetId(), rolloutID: job.RolloutID,
			emit: emit, tracer: d.cfg.Tracer, log: log, now: d.cfg.Now,
		},
	}
	return ctx, dep, func() { sp.End() }
}

// validateAux checks what a job that needs no artifact must hold, and
// applies the spec's defaults.
func (dep *deployment) validateAux() error {
	j := dep.job
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidJob, fmt.Sprintf(format, args...))
	}
	if j.Node.GetId() == "" || j.Node.GetAddress() == "" {
		return invalid("node id and address are required")
	}
	for _, v := range []struct{ name, value string }{{"rollout id", j.RolloutID}, {"owner", j.Owner}} {
		if v.value == "" || strings.ContainsFunc(v.value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return invalid("%s %q must be non-empty, without control characters", v.name, v.value)
		}
	}
	if id := j.Release.GetId(); !validReleaseID(id) {
		return invalid("release id %q must match %s, not end in .partial and be at most 200 bytes", id, releaseIDPattern)
	}
	dep.spec = j.Spec
	if err := dep.spec.CheckAndSetDefaults(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidJob, err)
	}
	return nil
}

// connectAux dials the node and resolves the deploy path, like connect
// without the artifact checks.
func (dep *deployment) connectAux(ctx context.Context) error {
	r, err := dep.d.cfg.Dial(ctx, dep.job.Node)
	if err == nil && r == nil {
		err = errors.New("Config.Dial returned no connection")
	}
	if err != nil {
		return fmt.Errorf("connect %s: %w", dep.job.Node.GetAddress(), err)
	}
	dep.remote = r
	dep.dir = dep.spec.Path
	if !path.IsAbs(dep.dir) {
		home, err := r.Home(ctx)
		if err == nil && !path.IsAbs(home) {
			err = fmt.Errorf("the login's home %q is not absolute", home)
		}
		if err != nil {
			r.Close()
			return fmt.Errorf("resolve %s against the login's home: %w", dep.dir, err)
		}
		dep.dir = path.Join(home, dep.dir)
		if err := checkPath(dep.dir); err != nil {
			r.Close()
			return err
		}
	}
	dep.lockContent = lockContentFor(LockInfo{
		Owner: dep.job.Owner, Rollout: dep.job.RolloutID, Release: dep.job.Release.GetId(),
		Epoch: dep.job.Epoch, Time: dep.d.cfg.Now().UTC().Truncate(time.Millisecond),
	})
	return nil
}
