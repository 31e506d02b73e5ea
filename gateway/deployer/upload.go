package deployer

import (
	"context"
	"fmt"
	"os"
	"path"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// uploadName is the file the artifact is uploaded as, inside the partial
// release directory: the tar itself (removed after unpack) or, for a
// single-file artifact, its final name.
func (dep *deployment) uploadName() string {
	if dep.job.Release.GetArtifact().GetUnpack() == outpostv1.Unpack_UNPACK_NONE {
		return dep.job.Release.GetArtifact().GetName()
	}
	return artifactFile
}

func (dep *deployment) releaseDir() string {
	return path.Join(dep.dir, "releases", dep.job.Release.GetId())
}

func (dep *deployment) partialDir() string { return dep.releaseDir() + ".partial" }

// upload sends the artifact into the partial release directory the lock
// script made. A release already on the node is not sent again.
func (dep *deployment) upload(ctx context.Context) error {
	s := dep.rep.begin(outpostv1.Step_STEP_UPLOAD)
	if dep.facts.present {
		dep.rep.end(ctx, s, nil, "already present")
		return nil
	}
	detail, err := dep.uploadRun(ctx)
	dep.rep.end(ctx, s, err, detail)
	return err
}

// uploadRun sends a delta when the node's current release holds an
// artifact the gateway still has (deltaupload.go), else or when the delta
// did not rebuild exactly, the full artifact. The detail says which, and
// the bytes sent.
func (dep *deployment) uploadRun(ctx context.Context) (string, error) {
	d, why := dep.planDelta()
	if d != nil {
		detail, fellBack, err := dep.uploadDelta(ctx, d)
		if err != nil || fellBack == "" {
			return detail, err
		}
		why = "delta tried, but " + fellBack
		dep.log.Warn("delta upload did not rebuild the artifact; sending it whole", "reason", fellBack)
		dep.onUpload(UploadDelta, 0, true)
	}
	detail, err := dep.uploadFull(ctx)
	if err != nil {
		return "", err
	}
	return "full: " + detail + "; " + why, nil
}

func (dep *deployment) uploadFull(ctx context.Context) (string, error) {
	f, err := os.Open(dep.job.ArtifactPath)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	if dep.broken {
		if err := dep.reconnect(ctx); err != nil {
			return "", err
		}
	}
	remote := path.Join(dep.partialDir(), dep.uploadName())
	mode := os.FileMode(0o644)
	if dep.job.Release.GetArtifact().GetUnpack() == outpostv1.Unpack_UNPACK_NONE {
		// A single file is often a binary to run; tar artifacts carry
		// their own modes.
		mode = 0o755
	}
	start := time.Now()
	res, err := dep.remote.Upload(ctx, f, remote, mode)
	if err != nil {
		if ctx.Err() == nil {
			dep.broken = true
		}
		return "", err // sshexec's error names the upload and its path
	}
	dep.sentSHA256 = res.SHA256
	dep.rebuiltOK = false // the verify step hashes what was sent
	dep.onUpload(UploadFull, res.Bytes, false)
	if res.Bytes != dep.job.Release.GetArtifact().GetSize() {
		return "", fmt.Errorf("upload %s: sent %d bytes, the artifact has %d (did the file change?)", remote, res.Bytes, dep.job.Release.GetArtifact().GetSize())
	}
	return fmt.Sprintf("sent %s in %v", bytesIEC(res.Bytes), time.Since(start).Round(time.Millisecond)), nil
}
