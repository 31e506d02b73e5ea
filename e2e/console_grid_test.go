package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// gridCellsJS counts the cells of the drawn grid of n nodes whose colour
// is rgb (a pixel inside each cell, read back from the canvas).
func gridCellsJS(n int, rgb [3]byte) string {
	return fmt.Sprintf(`(() => {
		const c = document.querySelector('#grid');
		const n = %d;
		const cell = n > 5000 ? 6 : n > 1000 ? 9 : n > 100 ? 14 : 22; // as the page lays it out
		const cols = Math.floor(c.width / cell);
		const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		let count = 0;
		for (let i = 0; i < n; i++) {
			const o = 4 * ((Math.floor(i / cols) * cell + 2) * c.width + (i %% cols) * cell + 2);
			if (px[o] === %d && px[o + 1] === %d && px[o + 2] === %d) count++;
		}
		return count;
	})()`, n, rgb[0], rgb[1], rgb[2])
}

// checkGridLive follows the grid of rollout id (n nodes, all pending and
// drawn in tab) past its snapshot: a node opened shows its record, which
// the grid's snapshot does not carry; the rollout is aborted, and every
// cell and the open node turn SKIPPED without a reload.
func checkGridLive(t *testing.T, tab context.Context, s *system, id string, n int, dc string) {
	t.Helper()
	pending, skipped := [3]byte{0xd0, 0xd7, 0xde}, [3]byte{0x8c, 0x95, 0x9f}
	if got := read(t, tab, "pending cells", chromedp.Evaluate[int](gridCellsJS(n, pending))); got != n {
		t.Errorf("%d of %d cells drawn PENDING's colour, want all", got, n)
	}
	run(t, tab, "open the first node",
		js(`window.notReloaded = true`),
		js(`const c = document.querySelector('#grid'); const b = c.getBoundingClientRect();
			c.dispatchEvent(new MouseEvent('click', {clientX: b.left + 2, clientY: b.top + 2, bubbles: true}))`),
		waitText("#node-panel", dc, 30*time.Second))
	panel := read(t, tab, "node panel", chromedp.Text(css("#node-panel")))
	if !strings.Contains(panel, "PENDING") || !strings.Contains(panel, "grid-00000") {
		t.Errorf("node panel of grid-00000 before the abort:\n%s\nwant its id and PENDING", panel)
	}
	if _, err := s.client.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: id, Reason: "console grid test over"}); err != nil {
		t.Fatal(err)
	}
	run(t, tab, "every cell turns SKIPPED",
		waitJS(fmt.Sprintf(`%s === %d`, gridCellsJS(n, skipped), n), 2*time.Minute),
		waitText("#node-panel", "SKIPPED", 30*time.Second))
	if !read(t, tab, "no reload", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Error("the rollout page reloaded; want live updates")
	}
}
