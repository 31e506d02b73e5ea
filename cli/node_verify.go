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

	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeVerifyCommand() *command {
	return &command{
		name:  "verify",
		short: "observe what really runs on nodes and report drift",
		usage: "outpost node verify [-l key=value,...] [--datacenter NAME] [-o table|wide|json|yaml]",
		long: `Asks the gateways to observe each selected node in one read-only SSH
command: the release current points to, that release's directory and
digest marker, the lock and whether its holder still runs, and the last
history line. Each observation is stored beside the release Outpost last
activated on the node, and any difference is drift:

  release_switched  current points to another release
  release_missing   the release directory (or current) is gone
  digest_missing    the release's .outpost-sha256 marker is gone
  digest_changed    the marker holds another digest
  stale_lock        .outpost/lock is left by no running rollout or activation
  unreachable       the node could not be observed (connect, auth, host key,
                    or output the gateway refused)

Nodes never deployed by Outpost and nodes in a running rollout are
skipped. One verification runs at a time per user, and a control plane
runs a few at once: over either bound the command fails and says so (wait
for the other verification, or retry); a node another verification is
observing right then shares that observation.
Progress is printed to stderr as nodes answer; the table follows.
The exit status is 1 when any node drifted or could not be observed.
Repair drifted nodes with a plan whose targets say drifted: true.

Examples:
  outpost node verify
  outpost node verify -l app=billing-api --datacenter seoul-1
  outpost node verify -o json`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			selector := fs.String("l", "", "label selector `key=value[,key=value]`: only nodes with all these labels")
			dc := fs.String("datacenter", "", "only nodes of this datacenter")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("node verify takes no arguments")
				}
				sel, err := plan.ParseLabelSelector(*selector)
				if err != nil {
					return usagef("-l: %v", err)
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				stream, err := c.cp.VerifyNodes(ctx, &outpostv1.VerifyNodesRequest{LabelSelector: plan.FormatLabelSelector(sel), Datacenter: *dc})
				if err != nil {
					return c.explain("verify nodes", err)
				}
				var results []*outpostv1.VerifyNodesResponse
				for {
					m, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return c.explain("verify nodes", err)
					}
					results = append(results, m)
					fmt.Fprintf(env.Stderr, "[%d/%d] %s: %s\n", m.GetDone(), m.GetTotal(), m.GetNode().GetId(), verdict(m))
				}
				bad := 0
				for _, m := range results {
					if m.GetSkipped() == "" && len(m.GetNode().GetStatus().GetDrift()) > 0 {
						bad++
					}
				}
				if structured(*out) {
					nodes := make([]*outpostv1.Node, len(results))
					for i, m := range results {
						nodes[i] = m.GetNode()
					}
					if err := writeProto(env.Stdout, *out, &outpostv1.ListNodesResponse{Nodes: nodes}); err != nil {
						return err
					}
				} else {
					tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tDATACENTER\tDESIRED\tOBSERVED\tDRIFT\tDETAIL")
					for _, m := range results {
						n := m.GetNode()
						st := n.GetStatus()
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.GetId(), n.GetDatacenter(), orDash(st.GetDesired().GetRelease()),
							orDash(observedText(st.GetObservation())), orDash(driftText(st)), orDash(detailText(m)))
					}
					if err := tw.Flush(); err != nil {
						return err
					}
				}
				if bad > 0 {
					return &exitError{code: 1, err: fmt.Errorf("%d of %d node(s) drifted or could not be observed", bad, len(results))}
				}
				return nil
			}
		},
	}
}

// verdict is one progress line's outcome.
func verdict(m *outpostv1.VerifyNodesResponse) string {
	if m.GetSkipped() != "" {
		return "skipped (" + m.GetSkipped() + ")"
	}
	if d := driftText(m.GetNode().GetStatus()); d != "" {
		return "DRIFT " + d
	}
	return "ok"
}

func detailText(m *outpostv1.VerifyNodesResponse) string {
	if m.GetSkipped() != "" {
		return "skipped: " + m.GetSkipped()
	}
	o := m.GetNode().GetStatus().GetObservation()
	if o.GetError() != "" {
		return clipText(o.GetError(), 120)
	}
	if o.GetLockHeld() {
		return "locked by " + orDash(o.GetLockOwner())
	}
	return ""
}

// driftText names a status's drift kinds ("release_switched,stale_lock").
func driftText(st *outpostv1.NodeStatus) string {
	names := make([]string, len(st.GetDrift()))
	for i, k := range st.GetDrift() {
		names[i] = strings.ToLower(strings.TrimPrefix(k.String(), "DRIFT_KIND_"))
	}
	return strings.Join(names, ",")
}

// observedText is what an observation found, in one word.
func observedText(o *outpostv1.NodeObservation) string {
	switch {
	case o == nil:
		return ""
	case o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_OK:
		return strings.ToLower(strings.TrimPrefix(o.GetResult().String(), "OBSERVE_RESULT_"))
	case o.GetRelease() != "":
		return o.GetRelease()
	case o.GetCurrentOther() != "":
		return "(" + clipText(o.GetCurrentOther(), 40) + ")"
	}
	return "(none)"
}

// observedAtText is when a node was last observed.
func observedAtText(st *outpostv1.NodeStatus) string {
	t := st.GetObservation().GetTime()
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func clipText(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
