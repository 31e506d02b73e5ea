package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// writeDryRun prints what a rollout would do, in full: each stage with its
// settings, then each batch with every node id, in the order they would
// run. Nothing was created and no node was touched.
func writeDryRun(w io.Writer, r *outpostv1.Rollout) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Dry run: nothing was created and no node was touched.\n")
	fmt.Fprintf(&b, "App:      %s\n", r.GetApp())
	if r.GetSourceRevision() > 0 {
		fmt.Fprintf(&b, "Undo:     back to revision %d (release %s)\n", r.GetSourceRevision(), r.GetReleaseId())
	}
	if a := r.GetArtifact(); a != nil {
		fmt.Fprintf(&b, "Artifact: %s (%s)\n", a.GetName(), byteSize(a.GetSize()))
	}
	if bg := r.GetBlueGreen(); bg != nil {
		live := bg.GetLiveColor()
		if live == "" {
			live = "none known"
		}
		if bg.GetSwitchBack() {
			fmt.Fprintf(&b, "Traffic:  switch back to %s (serving now: %s); no node is deployed\n", bg.GetTargetColor(), live)
		} else {
			fmt.Fprintf(&b, "Traffic:  deploy %s, then switch to it (serving now: %s)\n", bg.GetTargetColor(), live)
		}
	}
	state := "starts at once"
	if r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		state = "waits for approval by someone else"
	}
	fmt.Fprintf(&b, "Start:    %s\n", state)
	if r.GetPlan().GetValidation().GetRequired() {
		fmt.Fprintf(&b, "End:      waits for validation after success\n")
	}
	fmt.Fprintf(&b, "Nodes:    %s in %s\n", rolloutstate.CountsText(rolloutCounts(r)), stagesText(r))
	for i, st := range r.GetStages() {
		n := stageCounts(st).GetTotal()
		what := "deploy"
		if st.GetKind() == outpostv1.StageKind_STAGE_KIND_SWITCH {
			what = "traffic switch on"
		}
		fmt.Fprintf(&b, "\nStage %d: %s (%s %d node(s); %s)\n", i+1, st.GetName(), what, n, stageSettings(st))
		if len(st.GetBatches()) == 0 {
			fmt.Fprintf(&b, "  no node\n")
		}
		for _, bt := range st.GetBatches() {
			fmt.Fprintf(&b, "  batch %d of %d (%d): %s\n", bt.GetIndex()+1, len(st.GetBatches()), len(bt.GetNodeIds()), strings.Join(bt.GetNodeIds(), " "))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
