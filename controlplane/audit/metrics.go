package audit

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the audit log's Prometheus metrics. The control plane
// creates them once and hands them to its Log.
type Metrics struct {
	// QueueDepth is the entries queued and not yet written.
	QueueDepth prometheus.Gauge
	// QueueCapacity is Config.QueueSize: at that depth callers wait.
	QueueCapacity prometheus.Gauge
	// QueueWait observes how long each caller that found the queue full
	// waited for space: the back-pressure etcd puts on the engine and on
	// API calls.
	QueueWait prometheus.Histogram
	// NotQueued counts entries that were never queued: the caller's
	// context ended while the queue was full (a leadership term ended,
	// an API call's wait ran out) or the Log was closed. Each is logged
	// as an error. It stays 0 while etcd keeps up; an entry is never
	// refused only because the queue is full.
	NotQueued prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_audit_queue_depth",
			Help: "Audit entries queued and not yet written to etcd.",
		}),
		QueueCapacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_audit_queue_capacity",
			Help: "Audit entries the queue holds; when it is full, the rollout engine and API calls wait.",
		}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_audit_queue_wait_seconds",
			Help:    "Time callers that found the audit queue full waited for space (back-pressure from etcd).",
			Buckets: []float64{0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 10, 30, 60},
		}),
		NotQueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_audit_entries_not_queued_total",
			Help: "Audit entries not queued: the caller's context ended while the queue was full, or the log was closed. Logged as errors.",
		}),
	}
	for _, c := range []prometheus.Collector{m.QueueDepth, m.QueueCapacity, m.QueueWait, m.NotQueued} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
