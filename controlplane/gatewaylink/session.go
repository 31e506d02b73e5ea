// Package gatewaylink serves one gateway's Connect stream for the rollout
// engine (controlplane/rollout). It is the session layer and nothing
// more: it sends the welcome, sends what the engine queues (assignments,
// cancels, sequence acks), receives what the gateway reports and hands
// each message to the engine, and ends the session when the stream ends,
// a newer stream of the gateway replaces it, heartbeats stop, or the
// engine stops. It knows nothing of rollouts, nodes or capacity.
//
// Invariants:
//
//   - Assign, Cancel, Ack and Close never block: the engine's loop calls
//     them while it owns all rollout state, and a slow gateway must not
//     stall every rollout. Messages wait in the session's queue.
//   - The session holds no rollout state. Messages from the gateway reach
//     the engine one at a time, in the order received, through
//     ServeConfig.Deliver; the engine applies them on its loop.
//   - What was queued before Close is still sent (a final ack), unless
//     the stream fails.
//   - A stream that sends nothing (no heartbeat) for three heartbeat
//     intervals and a half ends with ErrHeartbeatTimeout.
package gatewaylink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/outposthq/outpost/internal/clock"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Reasons a gateway session ends, for the API to turn into status codes.
var (
	// ErrReplaced: a newer stream of the same gateway took over.
	ErrReplaced = errors.New("replaced by a newer stream of the same gateway")
	// ErrLeadershipEnded: this replica stopped leading; reconnect (to the leader).
	ErrLeadershipEnded = errors.New("this control plane is no longer the leader")
	// ErrHeartbeatTimeout: the gateway sent nothing for three heartbeat intervals.
	ErrHeartbeatTimeout = errors.New("no heartbeat from the gateway")
)

// Stream is the part of the Connect stream a session uses.
type Stream interface {
	Context() context.Context
	Send(*outpostv1.ConnectResponse) error
	Recv() (*outpostv1.ConnectRequest, error)
}

// Session is one Connect stream of one gateway. Create it with New, run
// it with Serve.
type Session struct {
	mu       sync.Mutex // guards queue and closeErr
	queue    []*outpostv1.ConnectResponse
	closeErr error
	signal   chan struct{} // capacity 1: queue is non-empty
	closed   chan struct{} // closed by Close
}

// New returns a session that queues messages until Serve sends them.
func New() *Session {
	return &Session{
		signal: make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
}

// Assign queues an assignment for the gateway; it never blocks.
func (s *Session) Assign(a *outpostv1.Assignment) {
	s.enqueue(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Assignment{Assignment: a}})
}

// Cancel queues the cancel of an assignment; it never blocks.
func (s *Session) Cancel(assignmentID, reason string) {
	s.enqueue(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Cancel{Cancel: &outpostv1.AssignmentCancel{
		AssignmentId: assignmentID, Reason: reason,
	}}})
}

// Ack queues the acknowledgement of the gateway's messages up to sequence;
// it never blocks.
func (s *Session) Ack(sequence uint64) {
	s.enqueue(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Ack{Ack: &outpostv1.SequenceAck{Sequence: sequence}}})
}

// enqueue queues m for the stream; it never blocks.
func (s *Session) enqueue(m *outpostv1.ConnectResponse) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *Session) take() []*outpostv1.ConnectResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// Close ends the session with err (first call wins); Serve returns err
// after sending what was queued. It never blocks.
func (s *Session) Close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeErr != nil {
		return
	}
	s.closeErr = err
	close(s.closed)
}

// Done is closed when Close was called.
func (s *Session) Done() <-chan struct{} { return s.closed }

// Err is the error Close was called with, or nil.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// ServeConfig is what Serve needs from the engine.
type ServeConfig struct {
	// Welcome is sent first (required).
	Welcome *outpostv1.GatewayWelcome
	// HeartbeatInterval is the interval the welcome announced (required,
	// > 0); the session ends after three and a half without a message.
	HeartbeatInterval time.Duration
	// Clock times the heartbeat timeout; nil means clock.Real.
	Clock clock.Clock
	// Deliver hands one message from the gateway to the engine (required).
	// It returns once the engine took the message, or with the error
	// that ends the session.
	Deliver func(ctx context.Context, m *outpostv1.ConnectRequest) error
	// Stopping is closed when the engine stops; Serve then returns
	// ErrLeadershipEnded. Nil means never.
	Stopping <-chan struct{}
	// Goroutines counts the goroutine that receives from the stream
	// (required). Recv cannot be interrupted except by ending the stream,
	// which happens when the stream's handler returns, so that goroutine
	// may outlive Serve; the engine waits for it before it ends.
	Goroutines *sync.WaitGroup
}

// Serve sends the welcome, then streams what the engine queues while
// delivering what the gateway sends, until the stream ends, Close is
// called, heartbeats stop, or cfg.Stopping closes. io.EOF from the
// gateway returns nil.
func (s *Session) Serve(stream Stream, cfg ServeConfig) error {
	switch {
	case cfg.Welcome == nil, cfg.HeartbeatInterval <= 0, cfg.Deliver == nil, cfg.Goroutines == nil:
		return errors.New("gatewaylink: Welcome, HeartbeatInterval, Deliver and Goroutines are required")
	}
	ctx := stream.Context()
	if err := stream.Send(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Welcome{Welcome: cfg.Welcome}}); err != nil {
		return err
	}

	msgs := make(chan *outpostv1.ConnectRequest)
	recvErr := make(chan error, 1)
	// Recv cannot be interrupted except by ending the stream, which
	// happens when the handler calling Serve returns; the goroutine then
	// ends too, and the engine waits for it.
	cfg.Goroutines.Add(1)
	go func() {
		defer cfg.Goroutines.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	timeout := 3*cfg.HeartbeatInterval + cfg.HeartbeatInterval/2
	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	timer := clk.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-msgs:
			timer.Reset(timeout)
			if err := cfg.Deliver(ctx, m); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-s.signal:
			for _, m := range s.take() {
				if err := stream.Send(m); err != nil {
					return err
				}
			}
		case <-s.closed:
			// Flush what was queued before the close (a final ack).
			for _, m := range s.take() {
				if err := stream.Send(m); err != nil {
					break
				}
			}
			return s.Err()
		case <-cfg.Stopping:
			return ErrLeadershipEnded
		case <-timer.C():
			return fmt.Errorf("%w for %v", ErrHeartbeatTimeout, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
