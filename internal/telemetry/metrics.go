package telemetry

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The Prometheus metrics that both daemons export, in one place so that
// the control plane and the gateways agree on names, labels, label values
// and bucket bounds: a dashboard or alert written against one daemon's
// series reads the other's the same way (the `job` label tells them apart).
// Metrics only one daemon exports are defined beside the code that feeds
// them.
const (
	// MetricStepDuration is a histogram of node deployment step durations
	// by LabelStep and LabelResult. The gateway observes the steps it
	// runs; the control plane the steps gateways report to it.
	MetricStepDuration = "outpost_step_duration_seconds"
	// MetricNodeDeployments counts node deployments that reached a final
	// state, by LabelApp, LabelDatacenter and LabelState.
	MetricNodeDeployments = "outpost_node_deployments_total"
	// MetricNodeDeploymentDuration is a histogram of node deployment
	// durations, from assignment to final state, by LabelApp,
	// LabelDatacenter and LabelState.
	MetricNodeDeploymentDuration = "outpost_node_deployment_duration_seconds"
	// MetricCertificateExpiry is the Unix time at which the daemon's own
	// TLS certificate expires, by LabelCertificate.
	MetricCertificateExpiry = "outpost_certificate_expiry_timestamp_seconds"
)

// Label names of the shared metrics.
const (
	LabelApp         = "app"
	LabelDatacenter  = "datacenter"
	LabelState       = "state"
	LabelStep        = "step"
	LabelResult      = "result"
	LabelCertificate = "certificate"
)

// StepBuckets are the upper bounds of MetricStepDuration's buckets, in
// seconds: from a lock on a fast node to a slow health check. Literals,
// not a generated series, so that `le` reads "2.5", never
// "3.6450000000000005".
var StepBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// NodeDeploymentBuckets are the upper bounds of
// MetricNodeDeploymentDuration's buckets, in seconds: a whole node
// deployment, from under a second to an hour of hooks.
var NodeDeploymentBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// Label values are the API enum names without their prefix, lower-cased:
// NODE_STATE_ROLLED_BACK is "rolled_back", ROLLOUT_STATE_PENDING_APPROVAL
// "pending_approval", STEP_BEFORE_INSTALL "before_install",
// STEP_PHASE_SUCCEEDED "succeeded" (NodeStateValue, RolloutStateValue and
// StepValue are in attrs.go: traces spell them the same way).

// StepPhaseValue is p as a label value ("succeeded").
func StepPhaseValue(p outpostv1.StepPhase) string { return EnumValue(p.String(), "STEP_PHASE_") }

// NodeMetrics are the node deployment metrics both daemons export.
type NodeMetrics struct {
	// StepDuration is MetricStepDuration.
	StepDuration *prometheus.HistogramVec
	// Deployments is MetricNodeDeployments.
	Deployments *prometheus.CounterVec
	// DeploymentDuration is MetricNodeDeploymentDuration.
	DeploymentDuration *prometheus.HistogramVec
}

// NewNodeMetrics creates the node deployment metrics and registers them
// with reg. who says whose observations they are, for the help text
// ("this gateway", "gateways' reports to this control plane").
func NewNodeMetrics(reg prometheus.Registerer, who string) (*NodeMetrics, error) {
	m := &NodeMetrics{
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricStepDuration,
			Help:    "Duration of finished node deployment steps (" + who + "), by step and result (succeeded, failed).",
			Buckets: StepBuckets,
		}, []string{LabelStep, LabelResult}),
		Deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricNodeDeployments,
			Help: "Node deployments that reached a final state (" + who + "), by app, datacenter and state (succeeded, failed, rolled_back, rollback_failed).",
		}, []string{LabelApp, LabelDatacenter, LabelState}),
		DeploymentDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricNodeDeploymentDuration,
			Help:    "Duration of node deployments from assignment to final state (" + who + "), by app, datacenter and state.",
			Buckets: NodeDeploymentBuckets,
		}, []string{LabelApp, LabelDatacenter, LabelState}),
	}
	for _, c := range []prometheus.Collector{m.StepDuration, m.Deployments, m.DeploymentDuration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ObserveStep records a finished step (phase succeeded or failed) that
// carries its duration; other events are ignored.
func (m *NodeMetrics) ObserveStep(ev *outpostv1.NodeStepEvent) {
	switch ev.GetPhase() {
	case outpostv1.StepPhase_STEP_PHASE_SUCCEEDED, outpostv1.StepPhase_STEP_PHASE_FAILED:
	default:
		return
	}
	if ev.GetDuration() == nil {
		return
	}
	m.StepDuration.WithLabelValues(StepValue(ev.GetStep()), StepPhaseValue(ev.GetPhase())).
		Observe(ev.GetDuration().AsDuration().Seconds())
}

// ObserveDeployment records a node deployment that ended in state after
// seconds.
func (m *NodeMetrics) ObserveDeployment(app, datacenter string, state outpostv1.NodeState, seconds float64) {
	s := NodeStateValue(state)
	m.Deployments.WithLabelValues(app, datacenter, s).Inc()
	if seconds >= 0 {
		m.DeploymentDuration.WithLabelValues(app, datacenter, s).Observe(seconds)
	}
}

// CertificateExpiry is MetricCertificateExpiry: when the daemon's TLS
// certificates expire, by name ("controlplane_server", "ca",
// "gateway_client"). A certificate not yet known is not reported, so an
// alert on its expiry never sees a 0. It is safe for concurrent use.
type CertificateExpiry struct {
	desc *prometheus.Desc

	mu       sync.Mutex // guards notAfter
	notAfter map[string]time.Time
}

// NewCertificateExpiry creates the gauge and registers it with reg.
func NewCertificateExpiry(reg prometheus.Registerer) (*CertificateExpiry, error) {
	c := &CertificateExpiry{
		desc: prometheus.NewDesc(MetricCertificateExpiry,
			"Unix time at which this daemon's TLS certificate expires, by certificate.",
			[]string{LabelCertificate}, nil),
		notAfter: map[string]time.Time{},
	}
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Set records that certificate which expires at notAfter (a renewed
// certificate replaces the old one's time).
func (c *CertificateExpiry) Set(which string, notAfter time.Time) {
	c.mu.Lock()
	c.notAfter[which] = notAfter
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *CertificateExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *CertificateExpiry) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for which, t := range c.notAfter {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(t.Unix()), which)
	}
}
