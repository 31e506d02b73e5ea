package e2e

import (
	"slices"
	"testing"

	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestReflectionListsServices lists the control plane's services the way
// grpcurl does.
func TestReflectionListsServices(t *testing.T) {
	s := newSystem(t, 1, alternateDC)
	stream, err := reflectionpb.NewServerReflectionClient(s.client.Conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		got = append(got, svc.GetName())
	}
	for _, want := range []string{
		outpostv1.ControlPlaneService_ServiceDesc.ServiceName,
		outpostv1.ArtifactService_ServiceDesc.ServiceName,
		outpostv1.GatewayService_ServiceDesc.ServiceName,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lists %q, missing %s", got, want)
		}
	}
	// The file descriptors resolve too, which grpcurl needs to call anything.
	name := outpostv1.ControlPlaneService_ServiceDesc.ServiceName
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name},
	}); err != nil {
		t.Fatal(err)
	}
	fd, err := stream.Recv()
	if err != nil || len(fd.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("file containing %s: %v, %v", name, fd, err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}
