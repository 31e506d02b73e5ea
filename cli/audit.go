package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func auditCommand() *command {
	return &command{
		name:  "audit",
		short: "show the audit log: who did what, node step results, state changes",
		usage: "outpost audit [--rollout ID] [--since DURATION|TIME] [--follow] [--limit N] [-o table|wide|json|yaml]",
		long: `Shows the audit log, oldest first: every mutating call (who, role, what,
from where, result), every node result with its steps and every rollout state
change. Request bodies are never recorded, so the log holds no secrets.
The log is hash-chained: outpost audit verify checks it, outpost audit
export writes it for WORM storage or a SIEM.

Columns: TIME (UTC), ACTOR, ROLE (a user's role, or gateway / system),
ACTION (the API method, or node.step, node.result, rollout.state),
RESOURCE, RESULT (OK, FAILED, or the refused call's status code) and
MESSAGE.

--since takes a duration back from now (90m, 24h, 168h) or an RFC 3339
time; 0 means everything kept (90 days unless the control plane is
configured otherwise). Without --since it is 24h, or everything when
--rollout is given. --follow keeps printing new entries until
interrupted, reconnecting if the connection drops. -o json prints one
AuditEntry per line.

Examples:
  outpost audit
  outpost audit --rollout r-000042
  outpost audit --since 1h --follow
  outpost audit --since 2026-03-01T00:00:00Z -o json | jq -r 'select(.result != "OK") | .message'`,
		sub: []*command{auditVerifyCommand(), auditExportCommand()},
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			rollout := fs.String("rollout", "", "only entries of rollout `ID`")
			since := &trackedString{value: "24h"}
			fs.Var(since, "since", "entries from this long ago (`DURATION`) or this RFC 3339 time; 0 means all")
			follow := fs.Bool("follow", false, "keep printing new entries until interrupted")
			limit := fs.Int("limit", 0, "show only the newest `N` stored entries; 0 means all")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("audit takes no arguments")
				}
				if *limit < 0 {
					return usagef("--limit must not be negative")
				}
				if *follow && *limit > 0 {
					return usagef("--limit and --follow cannot be combined")
				}
				from, err := parseSince(since.value, time.Now())
				if err != nil {
					return err
				}
				if *rollout != "" && !since.set {
					from = time.Time{}
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				a := auditClient{c: c, ac: outpostv1.NewAuditServiceClient(c.cc)}
				if *follow {
					return a.follow(ctx, env, *rollout, from, *out)
				}
				entries, err := a.list(ctx, *rollout, from, *limit)
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeAuditItems(env.Stdout, *out, entries)
				}
				if len(entries) == 0 {
					fmt.Fprintln(env.Stderr, "no audit entries")
					return nil
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				wide := *out == "wide"
				fmt.Fprintln(tw, strings.Join(auditColumns(auditHeader, auditWideHeader, wide), "\t"))
				for _, e := range entries {
					fmt.Fprintln(tw, strings.Join(auditColumns(auditRow(e), auditWideRow(e), wide), "\t"))
				}
				return tw.Flush()
			}
		},
	}
}

// parseSince reads --since: a duration back from now, an RFC 3339 time,
// or 0 (zero time: everything).
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "0" || s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--since %s: must not be negative", s)
		}
		if d == 0 {
			return time.Time{}, nil
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--since %q: want a duration (24h) or an RFC 3339 time (2026-03-01T00:00:00Z)", s)
	}
	return t, nil
}

// auditClient reads the audit log.
type auditClient struct {
	c  *client
	ac outpostv1.AuditServiceClient
}

// list fetches every entry from since (zero: all) of rollout ("" all),
// keeping the newest limit (0: all).
func (a auditClient) list(ctx context.Context, rollout string, since time.Time, limit int) ([]*outpostv1.AuditEntry, error) {
	req := &outpostv1.ListAuditEntriesRequest{PageSize: listPageSize, RolloutId: rollout}
	if !since.IsZero() {
		req.Since = timestamppb.New(since)
	}
	var out []*outpostv1.AuditEntry
	err := listPages(ctx, a.c, "list audit entries", func(ctx context.Context, token string) (*outpostv1.ListAuditEntriesResponse, error) {
		req.PageToken = token
		return a.ac.ListAuditEntries(ctx, req)
	}, func(resp *outpostv1.ListAuditEntriesResponse) bool {
		out = append(out, resp.GetEntries()...)
		if limit > 0 && len(out) > limit {
			out = append(out[:0], out[len(out)-limit:]...)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// follow prints entries from since (zero: only new ones) as they come,
// until ctx ends, resuming after the last entry printed when the stream
// breaks.
func (a auditClient) follow(ctx context.Context, env *Env, rollout string, since time.Time, format string) error {
	req := &outpostv1.WatchAuditEntriesRequest{RolloutId: rollout}
	if !since.IsZero() {
		req.Since = timestamppb.New(since)
	}
	asItems := structured(format)
	if !asItems {
		fmt.Fprint(env.Stdout, followRow(auditHeader))
	}
	failures := 0
	for {
		got, err := a.watchOnce(ctx, req, env.Stdout, format)
		if ctx.Err() != nil {
			return nil // interrupted: the normal way to stop following
		}
		if got {
			failures = 0
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("the control plane ended the watch")
		} else if !retryableWatch(status.Code(err)) {
			return a.c.explain("watch audit log", err)
		}
		failures++
		if failures > watchRetry.attempts {
			return fmt.Errorf("%w (gave up after %d attempts)", a.c.explain("watch audit log", err), watchRetry.attempts)
		}
		delay := backoff(watchRetry, failures)
		fmt.Fprintf(env.Stderr, "outpost: %v; reconnecting in %s (attempt %d of %d)\n",
			a.c.explain("watch audit log", err), delay, failures, watchRetry.attempts)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// watchOnce runs one watch stream, printing each entry and moving req
// past it so a new stream resumes after it. It reports whether anything
// arrived.
func (a auditClient) watchOnce(ctx context.Context, req *outpostv1.WatchAuditEntriesRequest, w io.Writer, format string) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.ac.WatchAuditEntries(sctx, req)
	if err != nil {
		return false, err
	}
	got := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return got, err
		}
		e := resp.GetEntry()
		got = true
		req.Since, req.AfterSequence = e.GetTime(), e.GetSequence()
		if structured(format) {
			if err := writeAuditItems(w, format, []*outpostv1.AuditEntry{e}); err != nil {
				return got, err
			}
			continue
		}
		if _, err := fmt.Fprint(w, followRow(auditRow(e))); err != nil {
			return got, err
		}
	}
}

var auditHeader = []string{"TIME", "ACTOR", "ROLE", "ACTION", "RESOURCE", "RESULT", "MESSAGE"}

// auditWideHeader are the columns -o wide adds.
var auditWideHeader = []string{"SEQUENCE", "REQUEST ID", "PEER"}

func auditWideRow(e *outpostv1.AuditEntry) []string {
	return []string{fmt.Sprint(e.GetSequence()), orDash(e.GetRequestId()), orDash(e.GetPeerAddress())}
}

// auditColumns is the table's columns, with the wide ones when asked.
func auditColumns(base, extra []string, wide bool) []string {
	if !wide {
		return base
	}
	return append(append([]string(nil), base...), extra...)
}

// auditRow renders one entry as table cells.
func auditRow(e *outpostv1.AuditEntry) []string {
	return []string{
		timeText(e.GetTime()),
		orDash(e.GetActor()),
		actorRole(e),
		actionText(e.GetAction()),
		orDash(e.GetResource()),
		orDash(e.GetResult()),
		orDash(oneLine(e.GetMessage())),
	}
}

// followWidths are the column widths of --follow, which prints rows as
// they come and so cannot align them by the widest cell.
var followWidths = []int{20, 14, 8, 22, 24, 19}

func followRow(cells []string) string {
	var b strings.Builder
	for i, c := range cells {
		if i < len(followWidths) {
			fmt.Fprintf(&b, "%-*s  ", followWidths[i], c)
			continue
		}
		b.WriteString(c)
	}
	return strings.TrimRight(b.String(), " ") + "\n"
}

// actorRole is a user's role, or what kind of actor it is otherwise.
func actorRole(e *outpostv1.AuditEntry) string {
	switch e.GetActorKind() {
	case outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER:
		if e.GetRole() != outpostv1.Role_ROLE_UNSPECIFIED {
			return strings.ToLower(strings.TrimPrefix(e.GetRole().String(), "ROLE_"))
		}
		return "user"
	case outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY:
		return "gateway"
	case outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM:
		return "system"
	}
	return "-"
}

// actionText shortens "/outpost.v1.ControlPlaneService/PauseRollout" to
// "PauseRollout"; other actions (node.step) stay as they are.
func actionText(a string) string {
	if strings.HasPrefix(a, "/outpost.v1.") {
		return a[strings.LastIndexByte(a, '/')+1:]
	}
	return a
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine folds line breaks so an entry stays one table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// writeAuditItems writes one AuditEntry per line (json) or per document (yaml).
func writeAuditItems(w io.Writer, format string, entries []*outpostv1.AuditEntry) error {
	for _, e := range entries {
		if err := writeItem(w, format, e); err != nil {
			return err
		}
	}
	return nil
}
