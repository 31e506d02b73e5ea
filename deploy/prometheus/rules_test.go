// Package prometheus_test checks the alerting rules shipped in this
// directory with Prometheus' own promtool: they load, and their unit
// tests (alerts_test.yaml) pass. The end-to-end test in e2e/prometheus_test.go
// checks that every metric they name is one the daemons export.
package prometheus_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/testprometheus"
)

func TestAlertRulesLoad(t *testing.T) {
	out, err := exec.Command(testprometheus.Promtool(t), "check", "rules", "alerts.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestAlertRulesUnitTests(t *testing.T) {
	out, err := exec.Command(testprometheus.Promtool(t), "test", "rules", "alerts_test.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestAlertRuleTestsCanFail runs the unit tests against rules with one
// threshold changed, so that a promtool that passes everything would not
// go unnoticed.
func TestAlertRuleTestsCanFail(t *testing.T) {
	rules, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const from, to = "< 30 * 86400", "< 3 * 86400"
	if !strings.Contains(string(rules), from) {
		t.Fatalf("alerts.yaml has no %q to change", from)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"alerts.yaml":      []byte(strings.Replace(string(rules), from, to, 1)),
		"alerts_test.yaml": tests,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(testprometheus.Promtool(t), "test", "rules", "alerts_test.yaml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "OutpostCertificateExpiring") {
		t.Fatalf("promtool test rules passed with a changed threshold: %v\n%s", err, out)
	}
}
