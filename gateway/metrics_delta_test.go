package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outposthq/outpost/gateway/deployer"
)

// The deployer's upload reports reach the metrics an operator reads:
// bytes by mode, and delta rebuilds that failed.
func TestUploadMetrics(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m.onUpload(deployer.UploadFull, 1000, false)
	m.onUpload(deployer.UploadDelta, 40, false)
	m.onUpload(deployer.UploadDelta, 0, true)
	m.onUpload(deployer.UploadFull, 1000, false)
	if got := value(t, m.uploadBytes.WithLabelValues("full")); got != 2000 {
		t.Errorf("full bytes = %v, want 2000", got)
	}
	if got := value(t, m.uploadBytes.WithLabelValues("delta")); got != 40 {
		t.Errorf("delta bytes = %v, want 40", got)
	}
	if got := value(t, m.deltaRebuildFailures); got != 1 {
		t.Errorf("rebuild failures = %v, want 1", got)
	}
}

func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
