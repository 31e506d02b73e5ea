package gateway

import (
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// followerCP refuses every Connect the way a control plane replica that
// does not lead does.
type followerCP struct {
	outpostv1.UnimplementedGatewayServiceServer
	connects atomic.Int64
}

func (f *followerCP) Connect(s grpc.BidiStreamingServer[outpostv1.ConnectRequest, outpostv1.ConnectResponse]) error {
	f.connects.Add(1)
	if _, err := s.Recv(); err != nil {
		return err
	}
	return status.Error(codes.Unavailable, "this control plane (cp-2) is not the leader; the leader is cp-1")
}

func startFollowerCP(t *testing.T) (*followerCP, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &followerCP{}
	srv := grpc.NewServer()
	outpostv1.RegisterGatewayServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f, lis.Addr().String()
}

func TestGatewayFindsTheLeaderAmongReplicas(t *testing.T) {
	// Followers first and twice over, so the leader is reached only by
	// moving on from replicas that refuse.
	f1, addr1 := startFollowerCP(t)
	f2, addr2 := startFollowerCP(t)
	leader := startFakeCP(t)
	startGateway(t, leader, newFakeDeployer(), func(c *Config) {
		c.ControlPlane = addr1 + ", " + addr2 + "," + leader.addr + ","
	})
	waitFor(t, "a hello at the leader", func() bool { return leader.helloCount() > 0 })
	blob := []byte("artifact")
	digest := leader.addBlob(blob)
	leader.assign(t, assignment("a-1", nodeName(1), digest))
	if ack := leader.waitAck(t, "a-1"); !ack.GetAccepted() {
		t.Errorf("assignment from the leader refused: %q", ack.GetReason())
	}
	t.Logf("followers refused %d and %d streams", f1.connects.Load(), f2.connects.Load())
}

func TestControlPlaneTarget(t *testing.T) {
	tests := []struct {
		in         string
		wantTarget string
		wantOpts   int
	}{
		{"127.0.0.1:7443", "127.0.0.1:7443", 0},
		{"cp.example.internal:7443", "cp.example.internal:7443", 0},
		{" 127.0.0.1:7443,", "127.0.0.1:7443", 0},
		{"127.0.0.1:1, 127.0.0.1:2", controlPlanesScheme + ":///controlplanes", 2},
	}
	for _, tt := range tests {
		target, opts := controlPlaneTarget(tt.in)
		if target != tt.wantTarget || len(opts) != tt.wantOpts {
			t.Errorf("controlPlaneTarget(%q) = %q with %d options, want %q with %d", tt.in, target, len(opts), tt.wantTarget, tt.wantOpts)
		}
	}
}
