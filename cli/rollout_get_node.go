package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// maxNodePages bounds the pages `rollout get --node` reads looking for
// its node (5000 nodes a page).
const maxNodePages = 100

// getRolloutNode returns the record of node in rollout id, or an error
// naming what was not found.
func getRolloutNode(ctx context.Context, c *client, id, node string) (*outpostv1.RolloutNode, error) {
	token := ""
	for range maxNodePages {
		resp, err := c.cp.ListRolloutNodes(ctx, &outpostv1.ListRolloutNodesRequest{RolloutId: id, PageSize: 5000, PageToken: token})
		if err != nil {
			return nil, c.explain("list the nodes of rollout "+id, err)
		}
		for _, n := range resp.GetNodes() {
			if n.GetNodeId() == node {
				return n, nil
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return nil, fmt.Errorf("node %q is not in rollout %s (outpost rollout get %s lists its batches)", node, id, id)
}

// writeRolloutNode prints one node's record for people, its trace id
// last: the way from a failed node to its trace.
func writeRolloutNode(w io.Writer, n *outpostv1.RolloutNode) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "Rollout:\t%s\n", n.GetRolloutId())
	fmt.Fprintf(tw, "Node:\t%s (%s)\n", n.GetNodeId(), n.GetDatacenter())
	fmt.Fprintf(tw, "Stage:\t%s, batch %d\n", n.GetStage(), n.GetBatch()+1)
	fmt.Fprintf(tw, "State:\t%s\n", rolloutstate.NodeName(n.GetState()))
	if s := n.GetStep(); s != outpostv1.Step_STEP_UNSPECIFIED {
		fmt.Fprintf(tw, "Step:\t%s\n", strings.ToLower(strings.TrimPrefix(s.String(), "STEP_")))
	}
	if n.GetError() != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", n.GetError())
	}
	if n.GetGateway() != "" {
		fmt.Fprintf(tw, "Gateway:\t%s\n", n.GetGateway())
	}
	if n.GetRelease() != "" {
		fmt.Fprintf(tw, "Release:\t%s\n", n.GetRelease())
	}
	if n.GetUpdateTime() != nil {
		fmt.Fprintf(tw, "Updated:\t%s\n", timeText(n.GetUpdateTime()))
	}
	if n.GetTraceId() != "" {
		fmt.Fprintf(tw, "Trace:\t%s\n", n.GetTraceId())
	}
	return tw.Flush()
}
