package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fakeCP is an in-memory control plane on a real gRPC server on loopback,
// scripted by the test: it welcomes gateways, records what they send,
// de-duplicates and acknowledges sequenced messages like the real one, hands
// out assignments and cancels, serves artifacts, and can drop the stream.
type fakeCP struct {
	outpostv1.UnimplementedGatewayServiceServer
	addr string

	mu         sync.Mutex
	epoch      int64                                 // guarded by mu: sent in welcomes
	heartbeat  time.Duration                         // guarded by mu: sent in welcomes
	noAck      bool                                  // guarded by mu: send no SequenceAck
	forget     bool                                  // guarded by mu: welcome with acked_sequence 0
	hellos     []*outpostv1.GatewayHello             // guarded by mu
	acks       map[string]*outpostv1.AssignmentAck   // guarded by mu
	events     map[string][]*outpostv1.NodeStepEvent // guarded by mu: by assignment, deduplicated
	results    map[string]*outpostv1.NodeResult      // guarded by mu
	resultSeqs map[string]uint64                     // guarded by mu: sequence each result came with
	heartbeats int                                   // guarded by mu
	applied    uint64                                // guarded by mu: highest sequence applied
	dupes      int                                   // guarded by mu: sequenced messages seen twice
	stream     *cpStream                             // guarded by mu: the current stream
	blobs      map[string][]byte                     // guarded by mu
	fetches    int                                   // guarded by mu: FetchArtifact calls
	corrupt    bool                                  // guarded by mu: serve a flipped byte
	syncs      int                                   // guarded by mu: sync calls, to name their assignments
}

// cpStream is one Connect stream as the fake sees it.
type cpStream struct {
	out  chan *outpostv1.ConnectResponse
	kill chan struct{}
}

func startFakeCP(t *testing.T) *fakeCP {
	t.Helper()
	f := &fakeCP{
		epoch:      1,
		heartbeat:  time.Hour,
		acks:       make(map[string]*outpostv1.AssignmentAck),
		events:     make(map[string][]*outpostv1.NodeStepEvent),
		results:    make(map[string]*outpostv1.NodeResult),
		resultSeqs: make(map[string]uint64),
		blobs:      make(map[string][]byte),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
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
	return f
}

func (f *fakeCP) Connect(s grpc.BidiStreamingServer[outpostv1.ConnectRequest, outpostv1.ConnectResponse]) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "hello first")
	}
	st := &cpStream{out: make(chan *outpostv1.ConnectResponse, 1000), kill: make(chan struct{})}
	f.mu.Lock()
	f.hellos = append(f.hellos, hello)
	if f.stream != nil {
		close(f.stream.kill) // a newer stream replaces the older one
	}
	f.stream = st
	acked := f.applied
	if f.forget {
		acked = 0
	}
	welcome := &outpostv1.GatewayWelcome{Epoch: f.epoch, HeartbeatInterval: durationpb.New(f.heartbeat), AckedSequence: acked}
	f.mu.Unlock()
	if err := s.Send(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Welcome{Welcome: welcome}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			f.apply(st, m)
		}
	}()
	for {
		select {
		case m := <-st.out:
			if err := s.Send(m); err != nil {
				return err
			}
		case <-st.kill:
			return status.Error(codes.Unavailable, "stream dropped by the test")
		case err := <-recvErr:
			return err
		}
	}
}

// apply records one gateway message, ignoring sequenced duplicates as the
// real control plane does, and acknowledges it.
func (f *fakeCP) apply(st *cpStream, m *outpostv1.ConnectRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq := m.GetSequence(); seq != 0 {
		if seq <= f.applied {
			f.dupes++
			return
		}
		f.applied = seq
	}
	switch x := m.GetMsg().(type) {
	case *outpostv1.ConnectRequest_AssignmentAck:
		f.acks[x.AssignmentAck.GetAssignmentId()] = x.AssignmentAck
	case *outpostv1.ConnectRequest_StepEvent:
		id := x.StepEvent.GetAssignmentId()
		f.events[id] = append(f.events[id], x.StepEvent.GetEvent())
	case *outpostv1.ConnectRequest_NodeResult:
		f.results[x.NodeResult.GetAssignmentId()] = x.NodeResult
		f.resultSeqs[x.NodeResult.GetAssignmentId()] = m.GetSequence()
	case *outpostv1.ConnectRequest_Heartbeat:
		f.heartbeats++
	}
	if m.GetSequence() != 0 && !f.noAck {
		st.out <- &outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Ack{Ack: &outpostv1.SequenceAck{Sequence: f.applied}}}
	}
}

// send queues a message on the current stream, waiting for one to exist.
func (f *fakeCP) send(t *testing.T, m *outpostv1.ConnectResponse) {
	t.Helper()
	var st *cpStream
	waitFor(t, "a gateway stream", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		st = f.stream
		return st != nil
	})
	st.out <- m
}

func (f *fakeCP) assign(t *testing.T, a *outpostv1.Assignment) {
	t.Helper()
	f.send(t, &outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Assignment{Assignment: a}})
}

func (f *fakeCP) cancel(t *testing.T, id, reason string) {
	t.Helper()
	f.send(t, &outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Cancel{Cancel: &outpostv1.AssignmentCancel{AssignmentId: id, Reason: reason}}})
}

// sync returns once the gateway handled every message sent before: it
// handles them in order, one at a time, and answers an assignment at once
// (this one, which names no node, with a refusal).
func (f *fakeCP) sync(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	f.syncs++
	id := fmt.Sprintf("sync-%d", f.syncs)
	f.mu.Unlock()
	f.assign(t, &outpostv1.Assignment{AssignmentId: id})
	f.waitAck(t, id)
}

// drop ends the current stream with UNAVAILABLE.
func (f *fakeCP) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stream != nil {
		close(f.stream.kill)
		f.stream = nil
	}
}

func (f *fakeCP) with(fn func(f *fakeCP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeCP) helloCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.hellos)
}

func (f *fakeCP) hello(i int) *outpostv1.GatewayHello {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hellos[i]
}

func (f *fakeCP) ack(id string) *outpostv1.AssignmentAck {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acks[id]
}

func (f *fakeCP) result(id string) *outpostv1.NodeResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.results[id]
}

func (f *fakeCP) eventsOf(id string) []*outpostv1.NodeStepEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*outpostv1.NodeStepEvent(nil), f.events[id]...)
}

func (f *fakeCP) fetchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches
}

// waitAck waits for the gateway's answer to an assignment.
func (f *fakeCP) waitAck(t *testing.T, id string) *outpostv1.AssignmentAck {
	t.Helper()
	waitFor(t, "ack of "+id, func() bool { return f.ack(id) != nil })
	return f.ack(id)
}

// waitResult waits for an assignment's result.
func (f *fakeCP) waitResult(t *testing.T, id string) *outpostv1.NodeResult {
	t.Helper()
	waitFor(t, "result of "+id, func() bool { return f.result(id) != nil })
	return f.result(id)
}

// addBlob stores an artifact and returns its digest.
func (f *fakeCP) addBlob(data []byte) string {
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[d] = data
	return d
}

func (f *fakeCP) FetchArtifact(req *outpostv1.FetchArtifactRequest, s grpc.ServerStreamingServer[outpostv1.FetchArtifactResponse]) error {
	f.mu.Lock()
	f.fetches++
	data, ok := f.blobs[req.GetSha256()]
	corrupt := f.corrupt
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "artifact %s is not stored", req.GetSha256())
	}
	size := int64(len(data))
	data = bytes.Clone(data[req.GetOffset():])
	if corrupt && len(data) > 0 {
		data[0] ^= 0xff
	}
	if err := s.Send(&outpostv1.FetchArtifactResponse{Artifact: &outpostv1.Artifact{Sha256: req.GetSha256(), Size: size}}); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 64<<10)
		if err := s.Send(&outpostv1.FetchArtifactResponse{Chunk: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// waitFor polls cond every 5 ms for up to 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 3000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// checkEventOrder reports a problem when events are not numbered 1..n
// or a step ends before it starts.
func checkEventOrder(evs []*outpostv1.NodeStepEvent) error {
	open := map[outpostv1.Step]bool{}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) {
			return fmt.Errorf("event %d has seq %d", i, ev.GetSeq())
		}
		switch ev.GetPhase() {
		case outpostv1.StepPhase_STEP_PHASE_STARTED:
			open[ev.GetStep()] = true
		default:
			if !open[ev.GetStep()] {
				return fmt.Errorf("event %d ends step %v, which did not start", i, ev.GetStep())
			}
			delete(open, ev.GetStep())
		}
	}
	return nil
}
