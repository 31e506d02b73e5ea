package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// welcomeTimeout bounds the wait for the welcome after the hello.
	welcomeTimeout = 10 * time.Second
	// defaultHeartbeat is used when a welcome names no interval.
	defaultHeartbeat = 10 * time.Second
	// minHeartbeat keeps a bad welcome from making the gateway spin.
	minHeartbeat = 50 * time.Millisecond
)

// errStreamClosed reports that the control plane ended the stream.
var errStreamClosed = errors.New("control plane closed the stream")

// link keeps a stream to the control plane until ctx ends, reconnecting
// with jittered exponential backoff. It logs each change of state once,
// not each attempt.
func (g *Gateway) link(ctx context.Context, cp *cpConn) {
	var lastErr string
	failures := 0
	for {
		client, changed := cp.current()
		welcomed, err := g.session(ctx, client, changed)
		g.met.connected.Set(0)
		g.dropQueued("stream to the control plane ended")
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRenewed) {
			g.log.Info("reconnecting to the control plane with the renewed certificate", "deploying", g.activeCount())
			failures = 0
			continue
		}
		if welcomed {
			failures = 0
			lastErr = ""
			g.log.Warn("lost the control plane; reconnecting", "error", err, "deploying", g.activeCount())
		} else if msg := err.Error(); msg != lastErr {
			lastErr = msg
			g.log.Warn("cannot reach the control plane; retrying", "addr", g.cfg.ControlPlane, "error", err)
		} else {
			g.log.Debug("control plane still unreachable", "error", err)
		}
		d := g.backoff(failures)
		failures++
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff is the pause after the n-th consecutive failure (from 0):
// MinBackoff doubled n times, capped at MaxBackoff, then jittered down by
// up to half so that a fleet of gateways does not reconnect in lockstep.
func (g *Gateway) backoff(n int) time.Duration {
	d := g.cfg.MinBackoff
	for range min(n, 62) {
		if d >= g.cfg.MaxBackoff/2 {
			d = g.cfg.MaxBackoff
			break
		}
		d *= 2
	}
	d = min(d, g.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// session holds one Connect stream until it breaks or ctx ends. welcomed
// reports whether the control plane answered the hello.
func (g *Gateway) session(ctx context.Context, client outpostv1.GatewayServiceClient, changed <-chan struct{}) (welcomed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(ctx)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	hello := &outpostv1.GatewayHello{
		Name:                g.cfg.Name,
		Datacenter:          g.cfg.Datacenter,
		Capacity:            int32(g.cfg.Concurrency),
		Version:             g.cfg.Version,
		ActiveAssignmentIds: g.activeIDs(),
	}
	if err := stream.Send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, fmt.Errorf("send hello: %w", recvErr(stream, err))
	}
	welcome, err := g.awaitWelcome(ctx, cancel, stream)
	if err != nil {
		return false, err
	}

	g.mu.Lock()
	g.epoch = max(g.epoch, welcome.GetEpoch())
	g.mu.Unlock()
	g.out.restart(welcome.GetAckedSequence())
	g.met.connected.Set(1)
	interval := defaultHeartbeat
	if d := welcome.GetHeartbeatInterval().AsDuration(); d > 0 {
		interval = max(d, minHeartbeat)
	}
	g.log.Info("connected to the control plane", "addr", g.cfg.ControlPlane, "epoch", welcome.GetEpoch(),
		"heartbeat", interval, "resuming", len(hello.GetActiveAssignmentIds()))

	recvDone := make(chan error, 1)
	go func() { recvDone <- g.receive(stream) }()
	defer func() {
		cancel() // unblocks Recv
		<-recvDone
	}()

	// sendFailed ends the session after a failed Send. Send's io.EOF only
	// says the stream is gone; the status the server ended it with comes
	// from Recv, and only the receive goroutine may call Recv now (it also
	// handles whatever the server sent before the end).
	sendFailed := func(what string, err error) (bool, error) {
		if !errors.Is(err, io.EOF) {
			return true, fmt.Errorf("%s: %w", what, err)
		}
		select {
		case rerr := <-recvDone:
			recvDone <- rerr // for the deferred wait
			return true, fmt.Errorf("%s: %w", what, rerr)
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}

	heartbeat := time.NewTicker(interval)
	defer heartbeat.Stop()
	for {
		for _, req := range g.out.take() {
			if err := stream.Send(req); err != nil {
				return sendFailed("send", err)
			}
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-changed:
			return true, errRenewed
		case err := <-recvDone:
			recvDone <- err // for the deferred wait
			return true, err
		case <-heartbeat.C:
			hb := &outpostv1.GatewayHeartbeat{Time: timestamppb.New(g.cfg.Now()), Active: int32(g.activeCount())}
			if err := stream.Send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Heartbeat{Heartbeat: hb}}); err != nil {
				return sendFailed("send heartbeat", err)
			}
		case <-g.out.ready:
		}
	}
}

// connectStream is the client side of Connect.
type connectStream interface {
	Send(*outpostv1.ConnectRequest) error
	Recv() (*outpostv1.ConnectResponse, error)
}

// recvErr turns Send's io.EOF, which only says the stream is gone, into
// the status the server ended it with. It calls Recv, so it is only for
// while no other goroutine receives on the stream.
func recvErr(stream connectStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for range 100 { // drain: the status follows any queued messages
		if _, rerr := stream.Recv(); rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return errStreamClosed
			}
			return rerr
		}
	}
	return err
}

// awaitWelcome reads the welcome, giving up after welcomeTimeout (by
// cancelling the stream).
func (g *Gateway) awaitWelcome(ctx context.Context, cancel context.CancelFunc, stream connectStream) (*outpostv1.GatewayWelcome, error) {
	timer := time.AfterFunc(welcomeTimeout, cancel)
	defer timer.Stop()
	msg, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errStreamClosed
		}
		if !timer.Stop() && ctx.Err() != nil {
			return nil, fmt.Errorf("no welcome within %v", welcomeTimeout)
		}
		return nil, fmt.Errorf("await welcome: %w", err)
	}
	w := msg.GetWelcome()
	if w == nil {
		return nil, fmt.Errorf("await welcome: control plane sent %T first", msg.GetMsg())
	}
	return w, nil
}

// receive handles the control plane's messages until the stream breaks.
func (g *Gateway) receive(stream connectStream) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errStreamClosed
		}
		if err != nil {
			return err
		}
		switch m := msg.GetMsg().(type) {
		case *outpostv1.ConnectResponse_Assignment:
			g.out.addAck(g.accept(m.Assignment))
		case *outpostv1.ConnectResponse_Cancel:
			g.cancelAssignment(m.Cancel)
		case *outpostv1.ConnectResponse_Ack:
			g.out.acked(m.Ack.GetSequence())
		case *outpostv1.ConnectResponse_Welcome:
			g.log.Warn("ignoring a second welcome on one stream")
		default:
			g.log.Warn("ignoring an unknown message from the control plane", "type", fmt.Sprintf("%T", m))
		}
	}
}
