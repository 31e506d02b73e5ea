package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// metrics are the gateway's Prometheus metrics, in a private registry so
// that two daemons in one process (outpost dev) do not collide.
type metrics struct {
	deployments *prometheus.CounterVec   // by result
	stepSeconds *prometheus.HistogramVec // by step and result
	inFlight    prometheus.Gauge
	connected   prometheus.Gauge
	// sshCertsIssued and sshCertLogins count the SSH certificates made for
	// deployments and the logins nodes accepted with them.
	sshCertsIssued prometheus.Counter
	sshCertLogins  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_gateway_node_deployments_total",
			Help: "Node deployments finished, by result (succeeded, failed, rolled_back, rollback_failed).",
		}, []string{"result"}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outpost_gateway_step_duration_seconds",
			Help:    "Duration of node deployment steps, by step and result.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10), // 5ms .. ~98s
		}, []string{"step", "result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_gateway_deployments_in_flight",
			Help: "Node deployments running now.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_gateway_connected",
			Help: "1 while the gateway holds a welcomed stream to the control plane, else 0.",
		}),
		sshCertsIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_gateway_ssh_certificates_issued_total",
			Help: "Short-lived SSH certificates issued, one per node deployment (with --ssh-ca-key).",
		}),
		sshCertLogins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_gateway_ssh_certificate_logins_total",
			Help: "Node deployments whose node accepted their SSH certificate (counted at the first login of each).",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.deployments, m.stepSeconds, m.inFlight, m.connected, m.sshCertsIssued, m.sshCertLogins,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	return m, nil
}

// lowerName is an enum value's name without its prefix, lower-cased:
// ("NODE_STATE_ROLLED_BACK", "NODE_STATE_") -> "rolled_back".
func lowerName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

// observeStep records a finished step's duration.
func (m *metrics) observeStep(ev *outpostv1.NodeStepEvent) {
	var result string
	switch ev.GetPhase() {
	case outpostv1.StepPhase_STEP_PHASE_SUCCEEDED:
		result = "succeeded"
	case outpostv1.StepPhase_STEP_PHASE_FAILED:
		result = "failed"
	default:
		return
	}
	if ev.GetDuration() == nil {
		return
	}
	m.stepSeconds.WithLabelValues(lowerName(ev.GetStep().String(), "STEP_"), result).Observe(ev.GetDuration().AsDuration().Seconds())
}

// serveMetrics starts the /metrics endpoint when configured. stop shuts it
// down and waits for it.
func (g *Gateway) serveMetrics() (stop func(), err error) {
	if g.cfg.MetricsListen == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", g.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	g.mu.Lock()
	g.metricsAddr = lis.Addr().String()
	g.mu.Unlock()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("metrics endpoint stopped", "error", err)
		}
	}()
	g.log.Info("serving metrics", "addr", lis.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	}, nil
}

// MetricsAddr is the address /metrics is served on, once Run has started
// serving it; "" before that or when MetricsListen is empty.
func (g *Gateway) MetricsAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.metricsAddr
}
