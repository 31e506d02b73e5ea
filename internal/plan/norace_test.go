//go:build !race

package plan

// raceDetector reports whether the race detector is on: it makes every
// allocation and instruction dearer, so cost bounds scale with it.
const raceDetector = false
