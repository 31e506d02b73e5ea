package controlplane

import (
	"context"
	"errors"
	"io"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gatewayService implements outpostv1.GatewayService.
type gatewayService struct {
	outpostv1.UnimplementedGatewayServiceServer
	s    *Server
	join *auth.JoinServer
}

// JoinGateway redeems a join token for a gateway's first certificate.
func (g *gatewayService) JoinGateway(ctx context.Context, req *outpostv1.JoinGatewayRequest) (*outpostv1.JoinGatewayResponse, error) {
	return g.join.JoinGateway(ctx, req)
}

// RenewGatewayCertificate issues the calling gateway a fresh certificate.
func (g *gatewayService) RenewGatewayCertificate(ctx context.Context, req *outpostv1.RenewGatewayCertificateRequest) (*outpostv1.RenewGatewayCertificateResponse, error) {
	return g.join.RenewGatewayCertificate(ctx, req)
}

// Connect checks the gateway's hello and hands the stream to the leader's
// engine for the rest of the session. Followers refuse with UNAVAILABLE:
// assignments come only from the leader.
func (g *gatewayService) Connect(stream grpc.BidiStreamingServer[outpostv1.ConnectRequest, outpostv1.ConnectResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	hello := first.GetHello()
	switch {
	case hello == nil:
		return fieldError("hello", "required: the first message of a stream is hello")
	case hello.GetName() == "":
		return fieldError("hello.name", "required")
	case hello.GetDatacenter() == "":
		return fieldError("hello.datacenter", "required")
	case hello.GetCapacity() < 0:
		return fieldError("hello.capacity", "must not be negative")
	}
	if err := store.CheckID(hello.GetName()); err != nil {
		return fieldError("hello.name", "%v", err)
	}
	if err := store.CheckID(hello.GetDatacenter()); err != nil {
		return fieldError("hello.datacenter", "%v", err)
	}
	// The certificate, not the hello, says who the gateway is and which
	// datacenter's nodes it may be given.
	if err := auth.CheckGateway(ctx, hello.GetName(), hello.GetDatacenter()); err != nil {
		g.s.log.Warn("gateway refused", "gateway", hello.GetName(), "datacenter", hello.GetDatacenter(), "err", err)
		return err
	}
	eng := g.s.leaderEngine()
	if eng == nil {
		return g.s.notLeader(ctx)
	}
	err = eng.ServeGateway(stream, hello)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return status.Error(codes.Canceled, "gateway went away")
	}
	return g.s.engineStatus(ctx, err)
}

// FetchArtifact streams an artifact to a gateway.
func (g *gatewayService) FetchArtifact(req *outpostv1.FetchArtifactRequest, stream grpc.ServerStreamingServer[outpostv1.FetchArtifactResponse]) error {
	return g.s.fetchArtifact(req, stream)
}
