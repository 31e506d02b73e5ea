package gateway

import (
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// controlPlanesScheme names the resolver of a list of control plane
// replicas; it is private to one gateway's connection.
const controlPlanesScheme = "outpost-controlplanes"

// controlPlaneTarget turns Config.ControlPlane into a gRPC target and the
// dial options it needs. One address is dialled as it is. Several
// comma-separated addresses, the replicas of a highly available control
// plane, are balanced round robin over the reachable ones: only the leader
// accepts Connect, and a follower's UNAVAILABLE makes the next attempt go
// to the next replica, so the gateway finds the leader, and the next one
// after a failover, without knowing which replica leads.
func controlPlaneTarget(cp string) (string, []grpc.DialOption) {
	addrs := splitAddrs(cp)
	switch len(addrs) {
	case 0:
		return cp, nil
	case 1:
		return addrs[0], nil
	}
	state := resolver.State{}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		// ServerName is what TLS verifies for this replica, as it would
		// be had the gateway dialled it alone.
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme(controlPlanesScheme)
	r.InitialState(state)
	return controlPlanesScheme + ":///controlplanes", []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
	}
}

// splitAddrs splits a comma-separated address list, dropping empty items.
func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}
