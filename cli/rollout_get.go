package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutGetCommand() *command {
	return &command{
		name:  "get",
		short: "show one rollout: state, stages, batches and node counts",
		usage: "outpost rollout get ROLLOUT_ID [--node NODE_ID] [-o table|wide|json|yaml]",
		long: `Shows a rollout as it is now: app and revision, release, state and the
reason for it, then each stage with its state, node counts and batches.
json and yaml print the whole Rollout resource (plan included).
With --node, shows that node's record in the rollout instead: its state,
failed step, error and trace_id, the trace of its deployment (open it in
your trace UI, e.g. Jaeger's /trace/TRACE_ID).

For live progress use 'outpost rollout watch'.

Examples:
  outpost rollout get r-000042
  outpost rollout get r-000042 -o yaml
  outpost rollout get r-000042 --node srv-0007 -o json`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			out := outputFlag(fs, resourceFormats...)
			node := fs.String("node", "", "show this node's record in the rollout (state, error, trace_id)")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("rollout get takes one ROLLOUT_ID")
				}
				nodeSet := false
				fs.Visit(func(f *flag.Flag) { nodeSet = nodeSet || f.Name == "node" })
				if nodeSet && strings.TrimSpace(*node) == "" {
					return usagef("--node: want a node id")
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				if *node != "" {
					n, err := getRolloutNode(cctx, c, args[0], *node)
					if err != nil {
						return err
					}
					if *out != "table" {
						return writeProto(env.Stdout, *out, n)
					}
					return writeRolloutNode(env.Stdout, n)
				}
				resp, err := c.cp.GetRollout(cctx, &outpostv1.GetRolloutRequest{Id: args[0]})
				if err != nil {
					return c.explain("get rollout "+args[0], err)
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, resp.GetRollout())
				}
				return writeRollout(env.Stdout, resp.GetRollout())
			}
		},
	}
}

// writeRollout prints a rollout for people: a header, then the stages
// with their batches. Batches list at most a few node ids so a stage of
// thousands of nodes stays readable.
func writeRollout(w io.Writer, r *outpostv1.Rollout) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	id := r.GetId()
	if id == "" {
		id = "(dry run: not created)"
	}
	fmt.Fprintf(tw, "Rollout:\t%s\n", id)
	app := r.GetApp()
	if r.GetRevision() > 0 {
		app = fmt.Sprintf("%s (revision %d)", app, r.GetRevision())
	}
	fmt.Fprintf(tw, "App:\t%s\n", app)
	if env := r.GetPlan().GetEnvironment(); env != "" {
		fmt.Fprintf(tw, "Environment:\t%s\n", env)
	}
	if ch := r.GetPlan().GetChangeId(); ch != "" {
		fmt.Fprintf(tw, "Change:\t%s\n", ch)
	}
	if r.GetReleaseId() != "" {
		fmt.Fprintf(tw, "Release:\t%s\n", r.GetReleaseId())
	}
	if a := r.GetArtifact(); a != nil {
		sha := a.GetSha256()
		if len(sha) > 12 {
			sha = sha[:12]
		}
		fmt.Fprintf(tw, "Artifact:\t%s (%s, sha256 %s)\n", a.GetName(), byteSize(a.GetSize()), sha)
		if s := signedText(a.GetSignature()); s != "" {
			fmt.Fprintf(tw, "Signed by:\t%s\n", s)
		}
	}
	fmt.Fprintf(tw, "State:\t%s\n", rolloutstate.Name(r.GetState()))
	if r.GetMessage() != "" {
		fmt.Fprintf(tw, "Message:\t%s\n", r.GetMessage())
	}
	if r.GetRequester() != "" {
		fmt.Fprintf(tw, "Requester:\t%s\n", r.GetRequester())
	}
	if r.GetApprover() != "" {
		fmt.Fprintf(tw, "Approver:\t%s\n", r.GetApprover())
	}
	if r.GetCreateTime() != nil {
		fmt.Fprintf(tw, "Created:\t%s\n", timeText(r.GetCreateTime()))
	}
	if r.GetUpdateTime() != nil {
		fmt.Fprintf(tw, "Updated:\t%s\n", timeText(r.GetUpdateTime()))
	}
	fmt.Fprintf(tw, "Nodes:\t%s\n", rolloutstate.CountsText(rolloutCounts(r)))
	if r.GetTraceId() != "" {
		fmt.Fprintf(tw, "Trace:\t%s\n", r.GetTraceId())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.GetStages()) == 0 {
		return nil
	}
	running := !rolloutstate.Finished(r.GetState())
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tSTATE\tNODES\tSUCCEEDED\tRUNNING\tPENDING\tFAILED\tROLLED BACK\tSETTINGS")
	for i, s := range r.GetStages() {
		c := stageCounts(s)
		name := s.GetName()
		if running && int32(i) == r.GetCurrentStage() {
			name += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", name, stageState(s.GetState()),
			c.GetTotal(), c.GetSucceeded(), c.GetRunning(), c.GetPending(),
			c.GetFailed()+c.GetRollbackFailed(), c.GetRolledBack(), stageSettings(s))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tBATCH\tNODES\tNODE IDS")
	for i, s := range r.GetStages() {
		for _, b := range s.GetBatches() {
			// People count batches from 1, as the rollout messages do.
			batch := fmt.Sprintf("%d of %d", b.GetIndex()+1, len(s.GetBatches()))
			if running && int32(i) == r.GetCurrentStage() && b.GetIndex() == s.GetCurrentBatch() {
				batch += " *"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", s.GetName(), batch, len(b.GetNodeIds()), idsText(b.GetNodeIds(), 5))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeAnalysis(w, r)
}

// stageSettings summarizes a stage's knobs ("max fail 10%, bake 2m0s, manual pause").
func stageSettings(s *outpostv1.Stage) string {
	parts := []string{fmt.Sprintf("max fail %d%%", s.GetMaxFailPercent())}
	if s.GetMaxParallel() > 0 {
		parts = append(parts, fmt.Sprintf("parallel %d", s.GetMaxParallel()))
	}
	if d := s.GetBake().AsDuration(); s.GetBake() != nil && d > 0 {
		parts = append(parts, "bake "+d.String())
	}
	if s.GetManualPause() {
		parts = append(parts, "manual pause")
	}
	if s.GetAnalysis() != nil {
		parts = append(parts, "analysis")
	}
	return strings.Join(parts, ", ")
}

// idsText lists up to max ids, then how many more ("+1 more" would be no
// shorter than the id, so max+1 ids are listed in full).
func idsText(ids []string, max int) string {
	if len(ids) <= max+1 {
		return strings.Join(ids, " ")
	}
	return fmt.Sprintf("%s ... (+%d more)", strings.Join(ids[:max], " "), len(ids)-max)
}

// rolloutCounts returns the rollout's node counts, or, before the engine
// has counted (a dry run), every batched node as pending.
func rolloutCounts(r *outpostv1.Rollout) *outpostv1.NodeCounts {
	if c := r.GetNodeCounts(); c.GetTotal() > 0 {
		return c
	}
	var n int32
	for _, s := range r.GetStages() {
		n += stageCounts(s).GetTotal()
	}
	return &outpostv1.NodeCounts{Total: n, Pending: n}
}

func stageCounts(s *outpostv1.Stage) *outpostv1.NodeCounts {
	if c := s.GetNodeCounts(); c.GetTotal() > 0 {
		return c
	}
	var n int32
	for _, b := range s.GetBatches() {
		n += int32(len(b.GetNodeIds()))
	}
	return &outpostv1.NodeCounts{Total: n, Pending: n}
}

// signedText says who signed a rollout's artifact: the control plane's
// trusted key that verified it, or that only the gateways verify it; ""
// when it is unsigned.
func signedText(sig *outpostv1.ArtifactSignature) string {
	switch {
	case len(sig.GetBundle()) == 0:
		return ""
	case sig.GetSigner() != "":
		return sig.GetSigner() + " (verified by the control plane)"
	default:
		return "unverified by the control plane (its environment trusts no key); gateways with --trusted-keys verify it"
	}
}
