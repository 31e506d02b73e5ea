package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outposthq/outpost/internal/connlimit"
)

// registerConnMetrics exports the API listener's connection counts: a
// flood shows as unauthenticated connections at their cap and closes by
// reason.
func registerConnMetrics(reg prometheus.Registerer, l *connlimit.Listener) error {
	gauge := func(state string, f func(connlimit.Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "outpost_api_connections",
			Help:        "API connections open, by whether they showed a verified client certificate.",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(f(l.Stats())) })
	}
	closed := func(reason string, f func(connlimit.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "outpost_api_connections_closed_total",
			Help:        "API connections closed by the connection limits, by reason.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(f(l.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		gauge("authenticated", func(s connlimit.Stats) int { return s.Open - s.Unauthenticated }),
		gauge("unauthenticated", func(s connlimit.Stats) int { return s.Unauthenticated }),
		closed("per_source_limit", func(s connlimit.Stats) uint64 { return s.RefusedPerIP }),
		closed("full", func(s connlimit.Stats) uint64 { return s.RefusedFull }),
		closed("evicted", func(s connlimit.Stats) uint64 { return s.Evicted }),
		closed("handshake_timeout", func(s connlimit.Stats) uint64 { return s.HandshakeTimeouts }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
