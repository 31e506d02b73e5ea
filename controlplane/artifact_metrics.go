package controlplane

import "github.com/prometheus/client_golang/prometheus"

// artifactMetrics count what FetchArtifact sends to gateways: each gateway
// fetches an artifact once and fans it out to its nodes, so these grow
// with gateways, not nodes.
type artifactMetrics struct {
	fetches   prometheus.Counter
	sentBytes prometheus.Counter
}

func newArtifactMetrics(reg prometheus.Registerer) (*artifactMetrics, error) {
	m := &artifactMetrics{
		fetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_artifact_fetches_total",
			Help: "FetchArtifact calls served to gateways.",
		}),
		sentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_artifact_fetch_sent_bytes_total",
			Help: "Artifact bytes sent to gateways by FetchArtifact.",
		}),
	}
	for _, c := range []prometheus.Collector{m.fetches, m.sentBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
