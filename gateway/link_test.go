package gateway

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// endedStream is a Connect stream in the one interleaving a real server
// cannot be made to produce on demand: the server has ended the stream,
// the gateway's Send sees io.EOF, and the status is not yet delivered to
// the Recv that is blocked waiting for it. It records how many Recv calls
// overlap: gRPC allows one at a time.
type endedStream struct {
	grpc.ClientStream // the methods session does not use

	ended   chan struct{} // closed by the first Send after the hello
	endOnce sync.Once
	second  chan struct{} // closed when a Recv overlaps another

	mu         sync.Mutex
	recvs      int // guarded by mu
	inRecv     int // guarded by mu
	maxOverlap int // guarded by mu
}

func (s *endedStream) Send(m *outpostv1.ConnectRequest) error {
	if m.GetHello() != nil {
		return nil
	}
	s.endOnce.Do(func() { close(s.ended) })
	return io.EOF
}

func (s *endedStream) Recv() (*outpostv1.ConnectResponse, error) {
	s.mu.Lock()
	n := s.recvs
	s.recvs++
	s.inRecv++
	s.maxOverlap = max(s.maxOverlap, s.inRecv)
	if s.inRecv == 2 {
		close(s.second)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inRecv--
		s.mu.Unlock()
	}()
	if n == 0 {
		return &outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Welcome{Welcome: &outpostv1.GatewayWelcome{
			Epoch: 1, HeartbeatInterval: durationpb.New(minHeartbeat),
		}}}, nil
	}
	<-s.ended
	// Hold the status back a moment, long enough for a second Recv
	// started right after the failed Send to overlap this one.
	select {
	case <-s.second:
	case <-time.After(500 * time.Millisecond):
	}
	return nil, status.Error(codes.Unavailable, "control plane is shutting down")
}

type endedClient struct {
	outpostv1.GatewayServiceClient // the methods session does not use
	stream                         *endedStream
}

func (c endedClient) Connect(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[outpostv1.ConnectRequest, outpostv1.ConnectResponse], error) {
	return c.stream, nil
}

// TestSendFailureTakesTheStatusFromTheReceiver ends the stream under a
// heartbeat: the session reports the status the server ended the stream
// with, and never calls Recv while its receive goroutine does (two Recv
// at once race inside gRPC, and the second would swallow messages the
// receiver must handle).
func TestSendFailureTakesTheStatusFromTheReceiver(t *testing.T) {
	g, err := New(Config{
		ControlPlane: "127.0.0.1:1",
		Name:         "gw-1",
		Datacenter:   "dc-1",
		CacheDir:     t.TempDir(),
		SSH:          SSHConfig{User: "deploy", Signers: []ssh.Signer{testSigner(t)}},
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &endedStream{ended: make(chan struct{}), second: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	welcomed, err := g.session(ctx, endedClient{stream: s}, nil)
	if !welcomed {
		t.Errorf("session reports no welcome")
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("session ended with %v, want the server's Unavailable status", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxOverlap != 1 {
		t.Errorf("%d Recv calls ran at once, want 1", s.maxOverlap)
	}
}
