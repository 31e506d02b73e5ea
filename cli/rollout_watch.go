package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutWatchCommand() *command {
	return &command{
		name:  "watch",
		short: "follow a rollout live until it ends or waits for validation",
		usage: "outpost rollout watch ROLLOUT_ID [-o table|wide|json|yaml]",
		long: `Follows a rollout until its deployment is over, then prints a summary
line (node counts per state and the duration). It returns when the
rollout ends, and at PENDING_VALIDATION: the release is deployed and
waits for a person to accept or reject it (outpost rollout validate).
It keeps following a rollout that waits for approval or is paused.

On a terminal it shows a progress bar per stage and for the running
batch, redrawn in place, with a line per node step as it ends (failed
steps highlighted). Elsewhere (a pipe, a CI log) it prints plain lines:
one per node step end, per failed node, and per rollout or stage state
change. -o json prints one JSON object per line, each a
WatchRolloutResponse (a snapshot first, then every change), with the
API's field names as grpcurl prints them; -o yaml prints the same as
YAML documents.

If the connection drops, the watch reconnects and resumes where it was.

Exit status: 0 when the rollout succeeded (SUCCEEDED, PENDING_VALIDATION
or VALIDATED), 1 when it ended any other way (ABORTED, FAILED_ROLLED_BACK,
REJECTED) or the watch failed, so scripts can gate on it.

Examples:
  outpost rollout watch r-000042
  outpost rollout watch r-000042 -o json | jq -c 'select(.stepEvent.phase=="STEP_PHASE_FAILED")'
  outpost rollout watch "$(outpost rollout create -f plan.yaml)" && echo deployed`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("rollout watch takes one ROLLOUT_ID")
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				return watchRollout(ctx, c, args[0], watchOptionsFor(env, *out))
			}
		},
	}
}

// retryPolicy bounds the watch's reconnects: attempts in a row without
// receiving anything, with exponential backoff from min to max.
type retryPolicy struct {
	attempts int
	min, max time.Duration
}

// watchRetry is the reconnect policy; tests shorten it.
var watchRetry = retryPolicy{attempts: 10, min: 250 * time.Millisecond, max: 5 * time.Second}

// watchOptions say how a watch is shown.
type watchOptions struct {
	out     io.Writer // progress lines, bars, JSON
	summary io.Writer // the final summary line
	notices io.Writer // reconnect notices
	format  string    // an -o value: json and yaml print the raw items
	live    bool      // redraw bars in place (a terminal)
	color   bool
	width   int
	refresh time.Duration // at most one redraw per refresh (live)
	retry   retryPolicy
	now     func() time.Time
}

func watchOptionsFor(env *Env, format string) watchOptions {
	o := watchOptions{
		out: env.Stdout, summary: env.Stdout, notices: env.Stderr,
		format: format, refresh: 100 * time.Millisecond, retry: watchRetry, now: time.Now,
	}
	if o.structured() {
		// stdout stays one JSON object per line (one YAML document).
		o.summary = env.Stderr
		return o
	}
	o.live, o.width = terminal(env.Stdout, env.Getenv)
	o.color = o.live && env.Getenv("NO_COLOR") == ""
	return o
}

// structured reports whether the watch prints the raw items (json,
// yaml) rather than progress for people (table, wide).
func (o watchOptions) structured() bool { return structured(o.format) }

// watchRollout follows rollout id until it is finished
// (rolloutstate.Finished) and returns nil only when it was deployed
// (rolloutstate.Deployed); otherwise an exitError with code 1 after the
// summary.
func watchRollout(ctx context.Context, c *client, id string, o watchOptions) error {
	p := newProgress()
	view := &textView{w: o.out, p: p, live: o.live, color: o.color, width: o.width, now: o.now}
	var sink watchSink = view
	if o.structured() {
		sink = nopSink{}
	}
	start := o.now()
	failures := 0
	for {
		got, err := watchOnce(ctx, c, id, p, sink, view, o)
		if got {
			failures = 0
		}
		if p.finished() {
			break
		}
		if ctx.Err() != nil {
			return c.explain("watch rollout "+id, ctx.Err())
		}
		if err == nil || errors.Is(err, io.EOF) {
			// The server ends the stream only after a terminal state; an
			// early end is a restart or a leader change: resume.
			err = status.Error(codes.Unavailable, "the watch ended before the rollout did")
		} else if !retryableWatch(status.Code(err)) {
			return c.explain("watch rollout "+id, err)
		}
		failures++
		if failures > o.retry.attempts {
			return fmt.Errorf("%w (gave up after %d attempts)", c.explain("watch rollout "+id, err), o.retry.attempts)
		}
		delay := backoff(o.retry, failures)
		fmt.Fprintf(o.notices, "outpost: %v; reconnecting in %s (attempt %d of %d)\n",
			c.explain("watch rollout "+id, err), delay, failures, o.retry.attempts)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.explain("watch rollout "+id, ctx.Err())
		case <-t.C:
		}
	}
	r := p.rollout
	elapsed := o.now().Sub(start)
	if r.GetCreateTime() != nil && r.GetUpdateTime() != nil {
		elapsed = r.GetUpdateTime().AsTime().Sub(r.GetCreateTime().AsTime())
	}
	counts := p.counts().proto()
	if counts.GetTotal() == 0 {
		counts = r.GetNodeCounts()
	}
	fmt.Fprintf(o.summary, "rollout %s %s after %s: %s\n", r.GetId(), rolloutstate.Name(r.GetState()), durationText(elapsed), rolloutstate.CountsText(counts))
	if !rolloutstate.Deployed(r.GetState()) {
		return &exitError{code: 1, err: errors.New("")}
	}
	return nil
}

// retryableWatch reports whether a watch that failed with code may resume.
// ResourceExhausted is final: it is the control plane's cap on watches,
// which only the user can lift by ending another watch.
func retryableWatch(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Aborted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// backoff is min doubled per failed attempt, capped at max.
func backoff(p retryPolicy, attempt int) time.Duration {
	d := p.min
	for i := 1; i < attempt && d < p.max; i++ {
		d *= 2
	}
	return min(d, p.max)
}

type recvResult struct {
	resp *outpostv1.WatchRolloutResponse
	err  error
}

// watchOnce runs one WatchRollout stream from p.revision until it ends or
// the rollout is finished, folding every item into p. It reports whether
// anything was received, and the error that ended the stream (io.EOF for
// a clean end, nil when it stopped at a finished rollout).
//
// The server ends the stream only at a terminal state; at
// PENDING_VALIDATION it keeps it open for the person's decision, so the
// watch stops by itself once p.finished, and cancels the stream.
//
// A goroutine receives, so the loop can redraw the live view on a ticker
// between items; it is stopped and waited for before returning.
func watchOnce(ctx context.Context, c *client, id string, p *progress, sink watchSink, view *textView, o watchOptions) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The server starts with a snapshot exactly when asked from revision 0.
	p.snapshot = p.revision == 0
	stream, err := c.cp.WatchRollout(sctx, &outpostv1.WatchRolloutRequest{Id: id, FromRevision: p.revision, NodePageSize: watchNodePage})
	if err != nil {
		return false, err
	}
	ch := make(chan recvResult, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		for {
			resp, err := stream.Recv()
			select {
			case ch <- recvResult{resp, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		for range ch {
		}
		wg.Wait()
	}()

	var tick <-chan time.Time
	if o.live && !o.structured() {
		t := time.NewTicker(o.refresh)
		defer t.Stop()
		tick = t.C
	}
	dirty := false
	var lastRender time.Time
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				// The receiver stopped without an error: ctx was cancelled.
				if ctx.Err() != nil {
					return got, ctx.Err()
				}
				return got, io.ErrUnexpectedEOF
			}
			if r.err != nil {
				if dirty {
					view.render()
				}
				return got, r.err
			}
			got = true
			if o.structured() {
				for _, item := range perNode(r.resp) {
					if err := writeItem(o.out, o.format, item); err != nil {
						return got, err
					}
				}
			}
			p.apply(r.resp, sink)
			dirty = true
			if p.finished() {
				view.render()
				return got, nil
			}
		case now := <-tick:
			// Redraw on change, and every second anyway so the elapsed
			// time moves while nodes wait on a slow step.
			if dirty || now.Sub(lastRender) >= time.Second {
				view.render()
				dirty, lastRender = false, now
			}
		}
	}
}

// watchNodePage is the most nodes the watch asks for per response: pages
// cost the control plane far less than a response per node.
const watchNodePage = 1000

// perNode splits a node page into one response per node, so that -o json
// prints the same lines whatever the server sent.
func perNode(resp *outpostv1.WatchRolloutResponse) []*outpostv1.WatchRolloutResponse {
	page := resp.GetNodePage()
	if page == nil {
		return []*outpostv1.WatchRolloutResponse{resp}
	}
	out := make([]*outpostv1.WatchRolloutResponse, 0, len(page.GetNodes()))
	for _, n := range page.GetNodes() {
		out = append(out, &outpostv1.WatchRolloutResponse{Revision: resp.GetRevision(), Event: &outpostv1.WatchRolloutResponse_Node{Node: n}})
	}
	return out
}

// nopSink ignores changes (JSON mode prints the raw items instead).
type nopSink struct{}

func (nopSink) rolloutChanged(_, _ *outpostv1.Rollout)                                {}
func (nopSink) stageChanged(*outpostv1.Rollout, *stageProgress, outpostv1.StageState) {}
func (nopSink) nodeChanged(*outpostv1.RolloutNode, outpostv1.NodeState)               {}
func (nopSink) stepEnded(*outpostv1.NodeStepEvent)                                    {}
func (nopSink) measured(string, *outpostv1.Measurement)                               {}
