package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// health waits for the new release to become healthy.
func (dep *deployment) health(ctx context.Context) error {
	s := dep.rep.begin(outpostv1.Step_STEP_HEALTH)
	if !dep.spec.Health.enabled() {
		dep.rep.end(ctx, s, nil, "no health check")
		return nil
	}
	detail, err := dep.waitHealthy(ctx, dep.releaseDir(), dep.job.Release.GetId())
	dep.rep.end(ctx, s, err, detail)
	return err
}

// waitHealthy checks until one attempt succeeds, Health.Timeout passes or
// ctx ends, pausing Health.Interval between attempts. dir and release are
// where and for what a command check runs.
func (dep *deployment) waitHealthy(ctx context.Context, dir, release string) (string, error) {
	h := dep.spec.Health
	check, what := dep.healthCheck(dir, release)
	start := time.Now()
	deadline := start.Add(h.Timeout)
	// Bounded even if the clock misbehaves.
	maxAttempts := int(h.Timeout/h.Interval) + 2
	// answered is the last attempt that ended before the deadline: when
	// the timeout cuts the final attempt short, its answer (status 503,
	// say) says more than "deadline exceeded".
	var last, answered error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		actx, cancel := context.WithDeadline(ctx, deadline)
		last = check(actx)
		cut := actx.Err() != nil
		cancel()
		if last == nil {
			return fmt.Sprintf("%s healthy after %d attempt(s), %v", what, attempt, time.Since(start).Round(time.Millisecond)), nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("health %s: %w (last: %v)", what, ctx.Err(), last)
		}
		if !cut {
			answered = last
		}
		if errors.Is(last, errHealthFatal) || time.Until(deadline) < h.Interval {
			took := time.Since(start).Round(time.Millisecond)
			if cut && answered != nil {
				return "", fmt.Errorf("health %s: not healthy after %d attempt(s) in %v: %w (the last attempt ran out of time: %w)", what, attempt, took, answered, last)
			}
			return "", fmt.Errorf("health %s: not healthy after %d attempt(s) in %v: %w", what, attempt, took, last)
		}
		t := time.NewTimer(h.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("health %s: %w (last: %v)", what, ctx.Err(), last)
		case <-t.C:
		}
	}
	return "", fmt.Errorf("health %s: not healthy after %d attempts: %w", what, maxAttempts, last)
}

// errHealthFatal marks a health failure that retrying cannot fix.
var errHealthFatal = errors.New("cannot check")

// healthCheck returns one attempt of the configured check and its name.
func (dep *deployment) healthCheck(dir, release string) (func(context.Context) error, string) {
	h := dep.spec.Health
	host := nodeHost(dep.job.Node.GetAddress())
	switch {
	case h.HTTP != nil:
		url := "http://" + net.JoinHostPort(host, strconv.Itoa(h.HTTP.Port)) + h.HTTP.Path
		return func(ctx context.Context) error { return dep.checkHTTP(ctx, url, h.HTTP.ExpectStatus) }, url
	case h.TCP != nil:
		addr := net.JoinHostPort(host, strconv.Itoa(h.TCP.Port))
		return func(ctx context.Context) error {
			var d net.Dialer
			ctx, cancel := context.WithTimeout(ctx, DefaultHealthAttemptTimeout)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		}, "tcp " + addr
	default:
		return func(ctx context.Context) error { return dep.checkCommand(ctx, dir, release) }, "command"
	}
}

func (dep *deployment) checkHTTP(ctx context.Context, url string, expect int) (err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errHealthFatal, err)
	}
	// One CLIENT span per attempt, under the health step's deployment.
	_, span := dep.d.cfg.Tracer.Start(ctx, "GET", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(append(telemetry.ServerAttrs(req.URL.Host, 80),
			semconv.HTTPRequestMethodGet, telemetry.AttrNodeID.String(dep.job.Node.GetId()))...))
	defer func() {
		if err != nil {
			telemetry.Fail(span, err)
		}
		span.End()
	}()
	resp, err := dep.d.cfg.HTTP.Do(req)
	if err != nil {
		return err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
	// Drain a little so the status is all that matters, then close.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	if resp.StatusCode != expect {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, expect)
	}
	return nil
}

// checkCommand runs the health command on the node in dir, with the hook
// environment. A lost connection is fatal: retrying would only time out.
func (dep *deployment) checkCommand(ctx context.Context, dir, release string) error {
	var s script
	hookEnv(&s, release, dep.dir, dep.job.RolloutID)
	s.set("D", dir)
	s.set("C", dep.spec.Health.Command)
	s.line(`cd -P -- "$D" && exec "${SHELL:-/bin/sh}" -c "$C" </dev/null`)
	res, err := dep.exec(ctx, s.String())
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %w", errHealthFatal, err)
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("health command: %w", err)
	}
	return nil
}

// nodeHost is the host part of a node address ("10.0.0.5:22" -> "10.0.0.5").
func nodeHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	if len(addr) > 1 && addr[0] == '[' && addr[len(addr)-1] == ']' {
		return addr[1 : len(addr)-1]
	}
	return addr
}

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
