package deployer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// diskFigures is one file system's line of `df -P`.
type diskFigures struct {
	usedPercent    int
	availableBytes int64
	mount          string
}

// parseDF reads POSIX `df -P` output: a header whose second column names
// the block size ("1024-blocks", "512-blocks") and one line per file
// system. The file system name may hold spaces, so the line is read from
// its numeric columns: total, used, available, capacity ("49%"), mount.
func parseDF(out string) (diskFigures, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		return diskFigures{}, fmt.Errorf("df -P printed %q", strings.TrimSpace(out))
	}
	header := strings.Fields(lines[0])
	if len(header) < 2 {
		return diskFigures{}, fmt.Errorf("df -P header %q", lines[0])
	}
	blockSize := int64(1024)
	if bs, ok := strings.CutSuffix(header[1], "-blocks"); ok {
		n, err := strconv.ParseInt(bs, 10, 64)
		if err != nil || n <= 0 {
			return diskFigures{}, fmt.Errorf("df -P header %q: block size", lines[0])
		}
		blockSize = n
	}
	f := strings.Fields(lines[len(lines)-1])
	for i := 3; i < len(f); i++ {
		pct, ok := strings.CutSuffix(f[i], "%")
		if !ok {
			continue
		}
		used, err1 := strconv.Atoi(pct)
		_, err2 := strconv.ParseInt(f[i-3], 10, 64)
		_, err3 := strconv.ParseInt(f[i-2], 10, 64)
		avail, err4 := strconv.ParseInt(f[i-1], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			continue
		}
		return diskFigures{
			usedPercent:    used,
			availableBytes: avail * blockSize,
			mount:          strings.Join(f[i+1:], " "),
		}, nil
	}
	return diskFigures{}, fmt.Errorf("df -P line %q has no capacity column", lines[len(lines)-1])
}

// precheck refuses the node when its deploy file system is too full, from
// the figures the lock script gathered: no extra round trip. It also
// refuses node states no deployment should touch.
func (dep *deployment) precheck(ctx context.Context) error {
	s := dep.rep.begin(outpostv1.Step_STEP_PRECHECK)
	detail, err := dep.precheckFacts()
	dep.rep.end(ctx, s, err, detail)
	return err
}

func (dep *deployment) precheckFacts() (string, error) {
	f := dep.facts
	if f.currentNotLink {
		return "", fmt.Errorf("%s/current exists and is not a symlink; move it away to use the releases layout", dep.dir)
	}
	if f.present && f.presentDigest != dep.job.Release.GetArtifact().GetSha256() {
		what := "a digest of " + f.presentDigest
		if f.presentDigest == "" {
			what = "no digest file: not made by Outpost, or incomplete"
		}
		return "", fmt.Errorf("%s/releases/%s already exists with %s; the release id must name one artifact", dep.dir, dep.job.Release.GetId(), what)
	}
	disk, err := parseDF(f.df)
	if err != nil {
		return "", fmt.Errorf("disk figures of %s: %w", dep.dir, err)
	}
	figures := fmt.Sprintf("disk %d%% used, %s free", disk.usedPercent, bytesIEC(disk.availableBytes))
	if f.present {
		// Nothing to upload: re-activating a release (undo) must work on a
		// full disk too.
		return figures + "; release already present", nil
	}
	need := dep.spec.Precheck.MinFreeBytes
	if need == 0 {
		need = dep.autoFreeBytes()
	}
	pe := &PrecheckError{
		Path: dep.dir, UsedPercent: disk.usedPercent, MaxUsedPercent: dep.spec.Precheck.MaxDiskUsedPercent,
		AvailableBytes: disk.availableBytes, MinFreeBytes: need,
	}
	if disk.usedPercent > pe.MaxUsedPercent || (need >= 0 && disk.availableBytes < need) {
		return "", pe
	}
	return figures, nil
}

// autoFreeBytes is the free space a node needs when the spec leaves it to
// the deployer: twice what the release will take, which for a tar is the
// larger of the upload and what it unpacks to (a bomb is small uploaded).
func (dep *deployment) autoFreeBytes() int64 {
	return 2 * max(dep.job.Release.GetArtifact().GetSize(), dep.art.unpacked)
}
