package controlplane

import (
	"context"
	"hash/fnv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Periodic verification (fleet truth): while it leads, a replica verifies
// every node Outpost deployed, each at its environment's VerifyInterval
// after its last observation (or activation), plus a jitter fixed per node
// (up to a fifth of the interval) so a fleet deployed at once is not
// observed at once. A sweep runs every verifySweep of the injected clock;
// it verifies the due nodes at most verifyConcurrency at a time per
// datacenter, and skips nodes in a running rollout, as VerifyNodes does,
// and nodes of a datacenter no gateway is connected for.

const (
	// DefaultVerifyInterval is the interval of environments that set none
	// and of nodes deployed with no environment.
	DefaultVerifyInterval = 15 * time.Minute
	// MinVerifyInterval and MaxVerifyInterval bound verify_interval.
	MinVerifyInterval = time.Minute
	MaxVerifyInterval = 7 * 24 * time.Hour
	// verifySweep is how often the leader looks for due nodes.
	verifySweep = time.Minute
)

// verifyInterval is the interval of env; 0 means never.
func (s *Server) verifyInterval(env string) time.Duration {
	if e := s.envs[env]; e != nil && e.VerifyInterval != 0 {
		return max(e.VerifyInterval, 0)
	}
	return DefaultVerifyInterval
}

// jitter is node's fixed share of interval, up to a fifth of it.
func jitter(node string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(node))
	span := interval / 5
	if span <= 0 {
		return 0
	}
	return time.Duration(h.Sum64() % uint64(span))
}

// runVerifier sweeps until ctx ends.
func (s *Server) runVerifier(ctx context.Context) {
	t := s.cfg.Clock.NewTicker(verifySweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			if n, err := s.verifySweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("periodic node verification", "error", err)
			} else if n > 0 {
				s.log.Debug("periodic node verification", "nodes", n)
			}
		}
	}
}

// verifySweep verifies the nodes due now and returns how many it did.
func (s *Server) verifySweep(ctx context.Context) (int, error) {
	targets, busy, err := s.verifyPlan(ctx, "", "")
	if err != nil {
		return 0, err
	}
	now := s.cfg.Clock.Now()
	envCache := map[string]string{} // rollout id -> environment
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		cacheMu sync.Mutex
		done    int
	)
	cache := map[string]*outpostv1.Rollout{}
	slots := map[string]chan struct{}{}
	for _, t := range targets {
		// No gateway of the datacenter (yet: after a restart they
		// reconnect): wait for the next sweep rather than record every
		// node of it as unreachable.
		if t.skipped != "" || !s.scans.connected(t.node.GetDatacenter()) {
			continue
		}
		d := t.status.GetDesired()
		env, ok := envCache[d.GetRolloutId()]
		if !ok {
			r := &outpostv1.Rollout{}
			if found, _, err := s.store.Get(ctx, store.RolloutKey(d.GetRolloutId()), r); err != nil {
				return done, err
			} else if found {
				env = r.GetPlan().GetEnvironment()
			}
			envCache[d.GetRolloutId()] = env
		}
		interval := s.verifyInterval(env)
		if interval == 0 {
			continue
		}
		last := d.GetTime().AsTime()
		if o := t.status.GetObservation(); o.GetTime() != nil {
			last = o.GetTime().AsTime()
		}
		if now.Before(last.Add(interval + jitter(t.node.GetId(), interval))) {
			continue
		}
		dc := t.node.GetDatacenter()
		if slots[dc] == nil {
			slots[dc] = make(chan struct{}, verifyConcurrency)
		}
		slot := slots[dc]
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return done, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slot }()
			t.status = proto.CloneOf(t.status)
			if _, err := s.inFlight.do(ctx, t.node.GetId(), func() (*outpostv1.NodeStatus, error) {
				return s.verifyNode(ctx, t, busy, cache, &cacheMu)
			}); err != nil {
				s.log.Warn("node verification not stored", "node", t.node.GetId(), "error", err)
				return
			}
			mu.Lock()
			done++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return done, nil
}
