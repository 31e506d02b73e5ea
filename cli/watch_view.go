package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// textView prints a watch for people. Plain (live false): one line per
// node step end, per failed node and per rollout or stage state change,
// written at once, for logs and pipes. Live (a terminal): the same lines
// scroll above a block of progress bars that render redraws in place; the
// caller calls render at most every refresh interval, so a burst of events
// from thousands of nodes costs one redraw.
type textView struct {
	w     io.Writer
	p     *progress
	live  bool
	color bool
	width int              // terminal columns; bars are cut to fit
	now   func() time.Time // for the elapsed time in the live header

	pending  bytes.Buffer // lines not yet written (live mode)
	barLines int          // lines of bars on screen, to move up over them
}

var _ watchSink = (*textView)(nil)

const (
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiGreen  = "\x1b[32m"
	ansiBold   = "\x1b[1m"
	ansiReset  = "\x1b[0m"
)

func (v *textView) paint(code, s string) string {
	if !v.color {
		return s
	}
	return code + s + ansiReset
}

// line queues (live) or writes (plain) one finished line.
func (v *textView) line(format string, a ...any) {
	if v.live {
		fmt.Fprintf(&v.pending, format+"\n", a...)
		return
	}
	fmt.Fprintf(v.w, format+"\n", a...)
}

func (v *textView) rolloutChanged(old, r *outpostv1.Rollout) {
	state := rolloutstate.Name(r.GetState())
	switch {
	case rolloutstate.Deployed(r.GetState()):
		state = v.paint(ansiGreen, state)
	case rolloutstate.Finished(r.GetState()):
		state = v.paint(ansiRed+ansiBold, state)
	}
	msg := ""
	if r.GetMessage() != "" {
		msg = ": " + r.GetMessage()
	}
	if old == nil {
		v.line("rollout %s (%s revision %d, release %s): %s%s", r.GetId(), r.GetApp(), r.GetRevision(), r.GetReleaseId(), state, msg)
		return
	}
	v.line("rollout %s: %s%s", r.GetId(), state, msg)
}

func (v *textView) stageChanged(r *outpostv1.Rollout, s *stageProgress, old outpostv1.StageState) {
	if old == outpostv1.StageState_STAGE_STATE_UNSPECIFIED && s.state == outpostv1.StageState_STAGE_STATE_PENDING {
		return // every stage starts so; not news
	}
	state := stageState(s.state)
	switch s.state {
	case outpostv1.StageState_STAGE_STATE_SUCCEEDED, outpostv1.StageState_STAGE_STATE_FAILED, outpostv1.StageState_STAGE_STATE_SKIPPED:
		if s.state == outpostv1.StageState_STAGE_STATE_FAILED {
			state = v.paint(ansiRed, state)
		}
		v.line("stage %s: %s (%s)", s.name, state, rolloutstate.CountsText(s.counts.proto()))
	default:
		v.line("stage %s: %s", s.name, state)
	}
}

func (v *textView) nodeChanged(n *outpostv1.RolloutNode, old outpostv1.NodeState) {
	var code string
	switch n.GetState() {
	case outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		code = ansiRed + ansiBold
	case outpostv1.NodeState_NODE_STATE_ROLLED_BACK:
		code = ansiYellow
	default:
		return // success shows in the step lines and the bars
	}
	msg := ""
	if n.GetError() != "" {
		msg = ": " + n.GetError()
	}
	v.line("%-*s %s%s", v.p.idWidth, n.GetNodeId(), v.paint(code, rolloutstate.NodeName(n.GetState())), msg)
}

func (v *textView) stepEnded(ev *outpostv1.NodeStepEvent) {
	d := durationText(ev.GetDuration().AsDuration())
	if ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_FAILED {
		v.line("%-*s %s %s after %s: %s", v.p.idWidth, ev.GetNodeId(), stepName(ev.GetStep()), v.paint(ansiRed+ansiBold, "FAILED"), d, ev.GetError())
		return
	}
	detail := ""
	if ev.GetDetail() != "" {
		detail = ": " + ev.GetDetail()
	}
	v.line("%-*s %s succeeded in %s%s", v.p.idWidth, ev.GetNodeId(), stepName(ev.GetStep()), d, detail)
}

// render writes the queued lines and, live, redraws the bars below them.
func (v *textView) render() {
	if !v.live {
		return
	}
	var b bytes.Buffer
	if v.barLines > 0 {
		// Up over the old bars, then clear to the end of the screen.
		fmt.Fprintf(&b, "\x1b[%dA\r\x1b[J", v.barLines)
	}
	b.Write(v.pending.Bytes())
	v.pending.Reset()
	bars := v.bars()
	b.WriteString(bars)
	v.barLines = strings.Count(bars, "\n")
	v.w.Write(b.Bytes())
}

// barWidth is the width of one progress bar in cells.
const barWidth = 20

// bars renders the live block: a header, one bar per stage, and one for
// the running batch. Every line is cut to the terminal width so the block
// never wraps (wrapping would break moving up over it).
func (v *textView) bars() string {
	r := v.p.rollout
	if r == nil {
		return ""
	}
	var lines []string
	elapsed := ""
	if ct := r.GetCreateTime(); ct != nil {
		end := v.now()
		if rolloutstate.Finished(r.GetState()) && r.GetUpdateTime() != nil {
			end = r.GetUpdateTime().AsTime()
		}
		elapsed = "  " + clockText(end.Sub(ct.AsTime()))
	}
	lines = append(lines, fmt.Sprintf("rollout %s  %s rev %d  release %s  %s%s", r.GetId(), r.GetApp(), r.GetRevision(), r.GetReleaseId(), rolloutstate.Name(r.GetState()), elapsed))
	nameWidth := 0
	for _, s := range v.p.stages {
		nameWidth = max(nameWidth, len(s.name))
	}
	cur := v.p.currentStage()
	for _, s := range v.p.stages {
		c := s.counts
		lines = append(lines, fmt.Sprintf("  %-*s %s %*d/%d  %-9s %s", nameWidth, s.name, bar(c.done(), c.total()),
			digits(c.total()), c.done(), c.total(), stageState(s.state), barCounts(c)))
		if s == cur && s.current >= 0 && int(s.current) < len(s.batches) && !rolloutstate.Finished(r.GetState()) {
			bc := s.batches[s.current]
			lines = append(lines, fmt.Sprintf("  %-*s %s %*d/%d  batch %d of %d  %s", nameWidth, "", bar(bc.done(), bc.total()),
				digits(c.total()), bc.done(), bc.total(), s.current+1, len(s.batches), barCounts(bc)))
		}
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(cut(l, v.width-1))
		b.WriteByte('\n')
	}
	return b.String()
}

// bar draws done of total as a fixed-width bar.
func bar(done, total int32) string {
	fill := 0
	if total > 0 {
		fill = int(int64(done) * barWidth / int64(total))
	}
	return "[" + strings.Repeat("█", fill) + strings.Repeat("░", barWidth-fill) + "]"
}

// barCounts lists the non-zero counts that matter while watching.
func barCounts(c stateCounts) string {
	var parts []string
	add := func(n int32, word string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", word, n))
		}
	}
	add(c[outpostv1.NodeState_NODE_STATE_SUCCEEDED], "ok")
	add(c[outpostv1.NodeState_NODE_STATE_RUNNING], "running")
	add(c[outpostv1.NodeState_NODE_STATE_FAILED]+c[outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED], "failed")
	add(c[outpostv1.NodeState_NODE_STATE_ROLLED_BACK], "rolled back")
	add(c[outpostv1.NodeState_NODE_STATE_SKIPPED], "skipped")
	return strings.Join(parts, "  ")
}

func digits(n int32) int { return len(fmt.Sprint(n)) }

// cut shortens s to at most n runes.
func cut(s string, n int) string {
	if n <= 0 || utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

// durationText rounds a duration for people: 12ms, 1.2s, 42s, 3m5s.
func durationText(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// clockText renders an elapsed time as m:ss or h:mm:ss.
func clockText(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// terminal reports whether w is a terminal that can redraw in place, and its width.
func terminal(w io.Writer, getenv func(string) string) (bool, int) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || getenv("TERM") == "dumb" {
		return false, 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width <= 0 {
		width = 80
	}
	return true, width
}
