package deployer

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

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
	log := d.cfg.Logger.With("node_id", job.Node.GetId(), "rollout_id", job.RolloutID).With(telemetry.LogArgs(ctx)...)
	ctx, span := d.cfg.Tracer.Start(ctx, "deployer.run_hook", trace.WithAttributes(
		telemetry.AttrNodeID.String(job.Node.GetId()),
		telemetry.AttrRolloutID.String(job.RolloutID),
	))
	defer span.End()
	rep := &reporter{nodeID: job.Node.GetId(), rolloutID: job.RolloutID, address: job.Node.GetAddress(), emit: emit, tracer: d.cfg.Tracer, log: log, now: d.cfg.Now}
	fail := func(step outpostv1.Step, err error) Result {
		telemetry.Fail(span, err)
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
