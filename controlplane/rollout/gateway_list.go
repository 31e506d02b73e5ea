package rollout

import (
	"context"
	"sort"

	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Gateways returns the gateways connected now, sorted by name: what each
// reported in its hello, since when, and how many nodes it deploys.
func (e *Engine) Gateways(ctx context.Context) ([]*outpostv1.Gateway, error) {
	var out []*outpostv1.Gateway
	err := e.do(ctx, func(context.Context) {
		for _, s := range e.gateways {
			out = append(out, &outpostv1.Gateway{
				Name:          s.name,
				Datacenter:    s.dc,
				Version:       s.version,
				ConnectTime:   timestamppb.New(s.since),
				NodesInFlight: int32(len(s.active)),
				Capacity:      int32(s.capacity),
			})
		}
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}
