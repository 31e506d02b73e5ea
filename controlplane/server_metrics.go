package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// leaderMetrics say which replica leads and how often that changes.
type leaderMetrics struct {
	leader  prometheus.Gauge
	changes prometheus.Counter
}

func newLeaderMetrics(reg prometheus.Registerer) (*leaderMetrics, error) {
	m := &leaderMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_leader",
			Help: "1 while this control plane replica is the leader (runs the rollout engine), else 0.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_leader_changes_total",
			Help: "Times this replica became or stopped being the leader.",
		}),
	}
	for _, c := range []prometheus.Collector{m.leader, m.changes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// set records whether this replica leads now.
func (m *leaderMetrics) set(leads bool) {
	v := 0.0
	if leads {
		v = 1
	}
	m.leader.Set(v)
	m.changes.Inc()
}

// rolloutStates are the states outpost_rollouts reports, always all of
// them (0 when none), so that a query for one state never finds nothing:
// the rollouts that are not over, whether the engine drives them or a
// person must act.
var rolloutStates = []outpostv1.RolloutState{
	outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL,
	outpostv1.RolloutState_ROLLOUT_STATE_APPROVED,
	outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
	outpostv1.RolloutState_ROLLOUT_STATE_PAUSED,
	outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION,
}

// rolloutCountTTL is how long a count of the rollouts in etcd serves
// scrapes: each count reads every rollout record, so two scrapers (or a
// scraper gone mad) must not each cost a full read.
const rolloutCountTTL = 10 * time.Second

// rolloutCountTimeout bounds one count; a scrape waits for it.
const rolloutCountTimeout = 5 * time.Second

// rolloutCollector exports outpost_rollouts: the rollouts in etcd that are
// not over, by state. Only the leader reports them, so that summing over
// replicas counts each rollout once; the others report nothing.
type rolloutCollector struct {
	desc    *prometheus.Desc
	drifted *prometheus.Desc // outpost_nodes_drifted, counted in the same pass
	store   *store.Store
	leads   func() bool
	now     func() time.Time

	mu     sync.Mutex // guards counts, drift and at; held during a count
	counts map[outpostv1.RolloutState]int
	drift  map[outpostv1.DriftKind]int // nodes in drift, by kind
	at     time.Time                   // when counts were read; zero: never
}

func newRolloutCollector(st *store.Store, leads func() bool) *rolloutCollector {
	return &rolloutCollector{
		desc: prometheus.NewDesc("outpost_rollouts",
			"Rollouts not yet over, by state (pending_approval, approved, running, paused, pending_validation), counted from etcd by the leader; other replicas report none.",
			[]string{telemetry.LabelState}, nil),
		drifted: prometheus.NewDesc("outpost_nodes_drifted",
			"Nodes whose last observation differs from what Outpost last activated (outpost node verify, or the periodic verification), by drift kind; a node with two kinds counts in both. Counted from etcd by the leader; other replicas report none.",
			[]string{"kind"}, nil),
		store: st,
		leads: leads,
		now:   time.Now,
	}
}

// Describe implements prometheus.Collector.
func (c *rolloutCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.drifted }

// Collect implements prometheus.Collector. A count that fails reports
// nothing rather than a wrong number.
func (c *rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.leads() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || c.now().Sub(c.at) >= rolloutCountTTL {
		ctx, cancel := context.WithTimeout(context.Background(), rolloutCountTimeout)
		counts, err := countRollouts(ctx, c.store)
		var drift map[outpostv1.DriftKind]int
		if err == nil {
			drift, err = countDrift(ctx, c.store)
		}
		cancel()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.desc, err)
			return
		}
		c.counts, c.drift, c.at = counts, drift, c.now()
	}
	for _, st := range rolloutStates {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.counts[st]), telemetry.RolloutStateValue(st))
	}
	for v := range outpostv1.DriftKind_name {
		k := outpostv1.DriftKind(v)
		if k == outpostv1.DriftKind_DRIFT_KIND_UNSPECIFIED {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.drifted, prometheus.GaugeValue, float64(c.drift[k]), telemetry.EnumValue(k.String(), "DRIFT_KIND_"))
	}
}

// invalidate makes the next scrape count again: the leader changed, or a
// test wants a fresh count.
func (c *rolloutCollector) invalidate() {
	c.mu.Lock()
	c.at = time.Time{}
	c.mu.Unlock()
}

// countRollouts reads every rollout record (not their nodes) and counts
// those not over by state.
func countRollouts(ctx context.Context, st *store.Store) (map[outpostv1.RolloutState]int, error) {
	counts := map[outpostv1.RolloutState]int{}
	after := ""
	for range 1 << 20 {
		next, err := st.ListChildren(ctx, store.RolloutsPrefix, 0, after, func(_ string, v []byte) error {
			r := &outpostv1.Rollout{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if !rolloutstate.Terminal(r.GetState()) {
				counts[r.GetState()]++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if next == "" {
			break
		}
		after = next
	}
	return counts, nil
}

// countDrift reads every node's fleet truth and counts the nodes in
// drift by kind.
func countDrift(ctx context.Context, st *store.Store) (map[outpostv1.DriftKind]int, error) {
	desired := map[string]*outpostv1.NodeDesired{}
	after := ""
	for range 1 << 20 {
		next, err := st.ListChildren(ctx, store.NodeDesiredPrefix, 0, after, func(key string, v []byte) error {
			d := &outpostv1.NodeDesired{}
			desired[strings.TrimPrefix(key, store.NodeDesiredPrefix)] = d
			return proto.Unmarshal(v, d)
		})
		if err != nil {
			return nil, err
		}
		if next == "" {
			break
		}
		after = next
	}
	counts := map[outpostv1.DriftKind]int{}
	after = ""
	for range 1 << 20 {
		next, err := st.ListChildren(ctx, store.NodeStatusPrefix, 0, after, func(key string, v []byte) error {
			ns := &outpostv1.NodeStatus{}
			if err := proto.Unmarshal(v, ns); err != nil {
				return err
			}
			supersede(ns, desired[strings.TrimPrefix(key, store.NodeStatusPrefix)])
			for _, k := range ns.GetDrift() {
				counts[k]++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if next == "" {
			break
		}
		after = next
	}
	return counts, nil
}

// registerCertExpiry exports when the control plane's server certificate
// and its CA expire: an expired CA stops every gateway and user.
func registerCertExpiry(reg prometheus.Registerer, server tls.Certificate, ca *x509.Certificate) error {
	leaf := server.Leaf
	if leaf == nil && len(server.Certificate) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(server.Certificate[0]); err != nil {
			return err
		}
	}
	exp, err := telemetry.NewCertificateExpiry(reg)
	if err != nil {
		return err
	}
	if leaf != nil {
		exp.Set("controlplane_server", leaf.NotAfter)
	}
	if ca != nil {
		exp.Set("ca", ca.NotAfter)
	}
	return nil
}

// newGRPCMetrics returns the API's gRPC server metrics: calls started and
// handled by service, method and code, messages, and a handling time
// histogram, from go-grpc-middleware's Prometheus provider. They are
// named outpost_grpc_server_* because the embedded etcd exports its own
// gRPC server's as grpc_server_* (health service included), on the same
// endpoint.
func newGRPCMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithNamespace("outpost")),
		grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramNamespace("outpost"),
			grpcprom.WithHistogramBuckets([]float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60})))
}

// metricsHandler serves reg and prometheus.DefaultGatherer: the embedded
// etcd registers its own metrics (etcd_*, and its gRPC server's) there, as
// do the Go runtime and process collectors. With an external etcd only the
// latter are there.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{reg, prometheus.DefaultGatherer}, promhttp.HandlerOpts{})
}
