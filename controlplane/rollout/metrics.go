package rollout

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Metrics are the engine's Prometheus metrics. They outlive engines: the
// control plane creates them once and hands them to each term's engine.
// Rollouts by state are not here: the control plane counts them from
// etcd, where rollouts waiting for a person are too (see
// controlplane/rollout_metrics.go).
type Metrics struct {
	// RolloutsFinished counts rollouts that reached a final state, by state.
	RolloutsFinished *prometheus.CounterVec
	// Node holds the node deployment metrics the gateways export too:
	// node deployments and their durations by app, datacenter and final
	// state, and the step durations gateways report.
	Node *telemetry.NodeMetrics
	// Gateways counts connected gateways by datacenter.
	Gateways *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	node, err := telemetry.NewNodeMetrics(reg, "reported to this control plane by gateways")
	if err != nil {
		return nil, err
	}
	m := &Metrics{
		RolloutsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_rollouts_finished_total",
			Help: "Rollouts that reached a final state while this control plane led, by state (succeeded, validated, aborted, failed_rolled_back, rejected).",
		}, []string{telemetry.LabelState}),
		Node: node,
		Gateways: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outpost_gateways_connected",
			Help: "Gateways connected to this control plane (0 unless it is the leader), by datacenter.",
		}, []string{telemetry.LabelDatacenter}),
	}
	for _, c := range []prometheus.Collector{m.RolloutsFinished, m.Gateways} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeNode records that n reached its final state now.
func (e *Engine) observeNode(n *nodeRun, state outpostv1.NodeState) {
	m := e.cfg.Metrics
	if m == nil {
		return
	}
	secs := -1.0 // a node that never started has no duration
	if st := n.rn.GetStartTime(); st != nil {
		secs = max(0, e.cfg.Clock.Now().Sub(st.AsTime()).Seconds())
	}
	m.Node.ObserveDeployment(n.run.r.GetApp(), n.rn.GetDatacenter(), state, secs)
}
