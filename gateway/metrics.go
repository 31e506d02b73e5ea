package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/telemetry"
)

// metrics are the gateway's Prometheus metrics, in a private registry so
// that two daemons in one process (outpost dev) do not collide. The node
// deployment metrics are the control plane's too (internal/telemetry).
type metrics struct {
	node        *telemetry.NodeMetrics
	sshFailures *prometheus.CounterVec // by sshexec.FailureClass
	certExpiry  *telemetry.CertificateExpiry
	inFlight    prometheus.Gauge
	connected   prometheus.Gauge
	// sshCertsIssued and sshCertLogins count the SSH certificates made for
	// deployments and the logins nodes accepted with them.
	sshCertsIssued prometheus.Counter
	sshCertLogins  prometheus.Counter
	// uploadBytes counts artifact bytes sent to nodes by mode (delta,
	// full); deltaRebuildFailures the deltas that did not rebuild the
	// artifact on the node, which was then sent whole.
	uploadBytes          *prometheus.CounterVec
	deltaRebuildFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	node, err := telemetry.NewNodeMetrics(reg, "run by this gateway")
	if err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	certExpiry, err := telemetry.NewCertificateExpiry(reg)
	if err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	m := &metrics{
		node:       node,
		certExpiry: certExpiry,
		sshFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_ssh_failures_total",
			Help: "SSH connections to nodes that could not be set up, by class (auth, host_key, refused, timeout, reset, other).",
		}, []string{"class"}),
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
		uploadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_artifact_upload_bytes_total",
			Help: "Artifact bytes sent to nodes, by mode: delta (only what the node's current release lacks) or full.",
		}, []string{"mode"}),
		deltaRebuildFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_artifact_delta_rebuild_failures_total",
			Help: "Delta uploads whose rebuilt artifact did not verify on the node (the full artifact was sent instead).",
		}),
	}
	m.uploadBytes.WithLabelValues(deployer.UploadDelta)
	m.uploadBytes.WithLabelValues(deployer.UploadFull)
	// Every class from the start, so that rate() sees the first failure.
	for _, class := range sshexec.FailureClasses {
		m.sshFailures.WithLabelValues(class)
	}
	for _, c := range []prometheus.Collector{
		m.sshFailures, m.inFlight, m.connected, m.sshCertsIssued, m.sshCertLogins,
		m.uploadBytes, m.deltaRebuildFailures,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	return m, nil
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

// onUpload is the deployer's Config.OnUpload.
func (m *metrics) onUpload(mode string, n int64, rebuildFailed bool) {
	if rebuildFailed {
		m.deltaRebuildFailures.Inc()
	}
	m.uploadBytes.WithLabelValues(mode).Add(float64(n))
}
