//go:build !race

package deployer

// raceDetector reports whether the tests run under -race.
const raceDetector = false
