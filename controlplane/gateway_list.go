package controlplane

import (
	"context"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// ListGateways pages through the gateways connected to the leader's
// engine, sorted by name. Followers hold no gateway streams: they answer
// as notLeader does, naming the leader.
func (c *controlPlaneService) ListGateways(ctx context.Context, req *outpostv1.ListGatewaysRequest) (*outpostv1.ListGatewaysResponse, error) {
	after, ok := decodeToken("gateways", req.GetPageToken())
	if !ok {
		return nil, fieldError("page_token", "not a token returned by ListGateways")
	}
	if len(req.GetDatacenter()) > 253 {
		return nil, fieldError("datacenter", "longer than 253 characters")
	}
	size := pageSize(req.GetPageSize(), defaultNodesPage, maxNodesPage)
	eng := c.s.leaderEngine()
	if eng == nil {
		return nil, c.s.notLeader(ctx)
	}
	all, err := eng.Gateways(ctx)
	if err != nil {
		return nil, c.s.engineStatus(ctx, err)
	}
	resp := &outpostv1.ListGatewaysResponse{}
	for _, g := range all {
		if g.GetName() <= after || (req.GetDatacenter() != "" && g.GetDatacenter() != req.GetDatacenter()) {
			continue
		}
		if len(resp.Gateways) == size {
			resp.NextPageToken = encodeToken("gateways", resp.Gateways[size-1].GetName())
			break
		}
		resp.Gateways = append(resp.Gateways, g)
	}
	return resp, nil
}
