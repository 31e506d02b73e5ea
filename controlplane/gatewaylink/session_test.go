package gatewaylink

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/clock/clocktest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fakeStream is a Connect stream fed from a channel; Recv returns io.EOF
// once in is closed.
type fakeStream struct {
	ctx  context.Context
	in   chan *outpostv1.ConnectRequest
	mu   sync.Mutex
	sent []*outpostv1.ConnectResponse
}

func newFakeStream(t *testing.T) *fakeStream {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &fakeStream{ctx: ctx, in: make(chan *outpostv1.ConnectRequest)}
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Send(m *outpostv1.ConnectResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, m)
	return nil
}

func (f *fakeStream) Recv() (*outpostv1.ConnectRequest, error) {
	select {
	case m, ok := <-f.in:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
}

func (f *fakeStream) messages() []*outpostv1.ConnectResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*outpostv1.ConnectResponse(nil), f.sent...)
}

func serveConfig(wg *sync.WaitGroup, deliver func(context.Context, *outpostv1.ConnectRequest) error) ServeConfig {
	if deliver == nil {
		deliver = func(context.Context, *outpostv1.ConnectRequest) error { return nil }
	}
	return ServeConfig{
		Welcome:           &outpostv1.GatewayWelcome{Epoch: 7},
		HeartbeatInterval: time.Hour,
		Deliver:           deliver,
		Goroutines:        wg,
	}
}

// serve runs Serve on a goroutine and returns its result channel.
func serve(s *Session, st Stream, cfg ServeConfig) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Serve(st, cfg) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func TestCloseFlushesQueuedMessages(t *testing.T) {
	// What the engine queued before it closed the session (a final ack)
	// still reaches the gateway, after the welcome.
	var wg sync.WaitGroup
	st := newFakeStream(t)
	s := New()
	s.Assign(&outpostv1.Assignment{AssignmentId: "a-1"})
	s.Cancel("a-0", "gone")
	s.Ack(42)
	s.Close(ErrReplaced)
	s.Close(errors.New("second close is ignored"))
	err := wait(t, serve(s, st, serveConfig(&wg, nil)))
	if !errors.Is(err, ErrReplaced) {
		t.Fatalf("Serve = %v, want ErrReplaced", err)
	}
	got := st.messages()
	if len(got) != 4 {
		t.Fatalf("sent %d messages, want 4: %v", len(got), got)
	}
	if got[0].GetWelcome().GetEpoch() != 7 || got[1].GetAssignment().GetAssignmentId() != "a-1" ||
		got[2].GetCancel().GetAssignmentId() != "a-0" || got[3].GetAck().GetSequence() != 42 {
		t.Fatalf("sent %v, want welcome, assignment, cancel, ack in order", got)
	}
	close(st.in)
	wg.Wait()
}

func TestServeEnds(t *testing.T) {
	tests := []struct {
		name string
		// end makes Serve return; it gets the session, the stream and
		// the engine's stopping channel.
		end       func(s *Session, st *fakeStream, stopping chan struct{})
		heartbeat time.Duration
		want      error
	}{
		{"gateway closes", func(_ *Session, st *fakeStream, _ chan struct{}) { close(st.in) }, time.Hour, nil},
		{"engine stops", func(_ *Session, _ *fakeStream, stopping chan struct{}) { close(stopping) }, time.Hour, ErrLeadershipEnded},
		{"no heartbeat", func(*Session, *fakeStream, chan struct{}) {}, 10 * time.Millisecond, ErrHeartbeatTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			st := newFakeStream(t)
			s := New()
			stopping := make(chan struct{})
			cfg := serveConfig(&wg, nil)
			cfg.HeartbeatInterval = tt.heartbeat
			cfg.Stopping = stopping
			done := serve(s, st, cfg)
			tt.end(s, st, stopping)
			err := wait(t, done)
			if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Serve = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeliverInOrderAndItsErrorEnds(t *testing.T) {
	var wg sync.WaitGroup
	st := newFakeStream(t)
	s := New()
	stop := errors.New("engine gone")
	var got []uint64
	deliver := func(_ context.Context, m *outpostv1.ConnectRequest) error {
		got = append(got, m.GetSequence())
		if m.GetSequence() == 3 {
			return stop
		}
		return nil
	}
	done := serve(s, st, serveConfig(&wg, deliver))
	for seq := uint64(1); seq <= 3; seq++ {
		st.in <- &outpostv1.ConnectRequest{Sequence: seq}
	}
	if err := wait(t, done); !errors.Is(err, stop) {
		t.Fatalf("Serve = %v, want the Deliver error", err)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("delivered %v, want [1 2 3]", got)
	}
	close(st.in)
	wg.Wait()
}

func TestServeNeedsConfig(t *testing.T) {
	var wg sync.WaitGroup
	cfg := serveConfig(&wg, nil)
	cfg.Deliver = nil
	if err := New().Serve(newFakeStream(t), cfg); err == nil {
		t.Fatal("Serve without Deliver: want an error")
	}
}

func TestHeartbeatTimeoutOnTheClock(t *testing.T) {
	// A session ends three and a half heartbeat intervals after the
	// gateway's last message, not before; every message restarts the
	// wait.
	const interval = time.Second
	const timeout = 3*interval + interval/2
	clk := clocktest.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC))
	var wg sync.WaitGroup
	st := newFakeStream(t)
	s := New()
	delivered := make(chan struct{}, 1)
	cfg := serveConfig(&wg, func(context.Context, *outpostv1.ConnectRequest) error {
		delivered <- struct{}{}
		return nil
	})
	cfg.HeartbeatInterval = interval
	cfg.Clock = clk
	done := serve(s, st, cfg)
	armed := func() bool { n, _ := clk.Waiters(); return n == 1 }
	waitUntil(t, "the heartbeat timer", armed)

	// A tick short of the timeout the timer has not fired (a fired timer
	// leaves the clock), so the session lives.
	clk.Advance(timeout - time.Millisecond)
	if !armed() {
		t.Fatal("the heartbeat timer fired before the timeout")
	}
	// A heartbeat restarts the wait from now.
	st.in <- &outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Heartbeat{Heartbeat: &outpostv1.GatewayHeartbeat{}}}
	<-delivered // Serve re-arms the timer before it delivers
	clk.Advance(timeout - time.Millisecond)
	if !armed() {
		t.Fatal("the heartbeat timer fired less than the timeout after a heartbeat")
	}
	clk.Advance(time.Millisecond)
	if err := wait(t, done); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("Serve = %v, want ErrHeartbeatTimeout", err)
	}
	close(st.in)
	wg.Wait()
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("waited 10s for %s", what)
}
