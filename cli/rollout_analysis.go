package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Canary analysis in `rollout get` (a section per stage with analysis)
// and `rollout watch` (a line per measurement).

// verdictText is a measurement's verdict for people.
func verdictText(m *outpostv1.Measurement) string {
	v := "inconclusive"
	switch m.GetVerdict() {
	case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS:
		v = "success"
	case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE:
		v = "failure"
	}
	if m.GetDryRun() {
		v += " (dry run)"
	}
	if m.GetActed() {
		v += " (acted)"
	}
	return v
}

// measurementLine is one measurement on one line.
func measurementLine(stage string, m *outpostv1.Measurement) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stage %s analysis: %s round %d: %s", stage, m.GetName(), m.GetRound()+1, verdictText(m))
	if m.GetValue() != "" {
		fmt.Fprintf(&b, ", value %s", m.GetValue())
	}
	if m.GetBaseline() != "" {
		fmt.Fprintf(&b, ", baseline %s", m.GetBaseline())
	}
	if m.GetVerdict() != outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS && m.GetMessage() != "" {
		fmt.Fprintf(&b, " (%s)", m.GetMessage())
	}
	return b.String()
}

func (v *textView) measured(stage string, m *outpostv1.Measurement) {
	line := measurementLine(stage, m)
	switch m.GetVerdict() {
	case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE:
		line = v.paint(ansiRed, line)
	case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_INCONCLUSIVE:
		line = v.paint(ansiYellow, line)
	}
	v.line("%s", line)
}

// writeAnalysis prints the measurements of every stage with analysis.
func writeAnalysis(w io.Writer, r *outpostv1.Rollout) error {
	for _, s := range r.GetStages() {
		a := s.GetAnalysis()
		if a == nil {
			continue
		}
		onFailure := a.GetOnFailure()
		if onFailure == "" {
			onFailure = "abort"
		}
		interval := a.GetInterval()
		if interval == "" {
			interval = "1m"
		}
		fmt.Fprintf(w, "\nAnalysis of stage %s: %d of %d round(s) every %s, failure limit %d, inconclusive limit %d, on failure %s\n",
			s.GetName(), rounds(s), a.GetCount(), interval, a.GetFailureLimit(), a.GetInconclusiveLimit(), onFailure)
		if len(s.GetMeasurements()) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tMEASUREMENT\tROUND\tVERDICT\tVALUE\tBASELINE\tWHY")
		for _, m := range s.GetMeasurements() {
			why := m.GetMessage()
			if len(why) > 120 {
				why = why[:120] + "…"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", timeText(m.GetTime()), m.GetName(), m.GetRound()+1, verdictText(m),
				dash(m.GetValue()), dash(m.GetBaseline()), why)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func rounds(s *outpostv1.Stage) int32 {
	ms := s.GetMeasurements()
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].GetRound() + 1
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
