package cli

import (
	"context"
	"sort"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// completePageSize bounds what one completion asks for: enough for a
// shell's list, one round trip.
const completePageSize = 200

// completeRolloutIDs completes the ids of the newest rollouts.
func completeRolloutIDs(ctx context.Context, c *client, prefix string) ([]string, error) {
	resp, err := c.cp.ListRollouts(ctx, &outpostv1.ListRolloutsRequest{PageSize: completePageSize})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range resp.GetRollouts() {
		if strings.HasPrefix(r.GetId(), prefix) {
			ids = append(ids, r.GetId())
		}
	}
	return ids, nil
}

// completeApps completes the apps of the newest rollouts.
func completeApps(ctx context.Context, c *client, prefix string) ([]string, error) {
	resp, err := c.cp.ListRollouts(ctx, &outpostv1.ListRolloutsRequest{PageSize: completePageSize})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var apps []string
	for _, r := range resp.GetRollouts() {
		if a := r.GetApp(); strings.HasPrefix(a, prefix) && !seen[a] {
			seen[a] = true
			apps = append(apps, a)
		}
	}
	sort.Strings(apps)
	return apps, nil
}

// completeNodeIDs completes node ids from the first page of the inventory.
func completeNodeIDs(ctx context.Context, c *client, prefix string) ([]string, error) {
	resp, err := c.cp.ListNodes(ctx, &outpostv1.ListNodesRequest{PageSize: listPageSize})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range resp.GetNodes() {
		if strings.HasPrefix(n.GetId(), prefix) {
			ids = append(ids, n.GetId())
		}
	}
	return ids, nil
}

// completeWith sets complete on the verbs named in names.
func completeWith(verbs []*command, complete completer, names ...string) []*command {
	for _, v := range verbs {
		for _, n := range names {
			if v.name == n {
				v.complete = complete
			}
		}
	}
	return verbs
}
