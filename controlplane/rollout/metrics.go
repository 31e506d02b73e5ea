package rollout

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the engine's Prometheus metrics. They outlive engines: the
// control plane creates them once and hands them to each term's engine.
type Metrics struct {
	// Rollouts counts the rollouts this leader drives, by state.
	Rollouts *prometheus.GaugeVec
	// RolloutsFinished counts rollouts that reached a final state, by state.
	RolloutsFinished *prometheus.CounterVec
	// NodeDeployments counts finished node deployments by result.
	NodeDeployments *prometheus.CounterVec
	// StepDuration observes step durations reported by gateways.
	StepDuration *prometheus.HistogramVec
	// Gateways counts connected gateways by datacenter.
	Gateways *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Rollouts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outpost_rollouts",
			Help: "Rollouts driven by this control plane (0 unless it is the leader), by state.",
		}, []string{"state"}),
		RolloutsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_rollouts_finished_total",
			Help: "Rollouts that reached a final state, by state.",
		}, []string{"state"}),
		NodeDeployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_node_deployments_total",
			Help: "Finished node deployments, by result (SUCCEEDED, FAILED, ROLLED_BACK, ROLLBACK_FAILED).",
		}, []string{"result"}),
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outpost_step_duration_seconds",
			Help:    "Duration of node deployment steps as reported by gateways, by step and result.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"step", "result"}),
		Gateways: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outpost_gateways_connected",
			Help: "Gateways connected to this control plane, by datacenter.",
		}, []string{"datacenter"}),
	}
	for _, c := range []prometheus.Collector{m.Rollouts, m.RolloutsFinished, m.NodeDeployments, m.StepDuration, m.Gateways} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
