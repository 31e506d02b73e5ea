package simfleet

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Release is a built release artifact.
type Release struct {
	Path    string // the .tar.gz file
	SHA256  string // lower-case hex digest of the file
	Size    int64
	Version string
}

// startScript records the release as running, atomically, so the health
// endpoint never reads a half-written file.
const startScript = `#!/bin/sh
# Simulated service: mark this release as the running one.
set -e
mkdir -p ../../.svc
pwd -P > ../../.svc/running.tmp
mv -f ../../.svc/running.tmp ../../.svc/running
`

const stopScript = `#!/bin/sh
# Simulated service: nothing runs any more.
rm -f ../../.svc/running
`

// versionRE keeps versions usable as file names and in shell words.
var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// releaseTime is the fixed modification time of every entry, so building the
// same version twice gives the same bytes and the same digest.
var releaseTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// BuildRelease writes dir/release-<version>[-broken].tar.gz following the
// simulated service contract: VERSION, bin/start, bin/stop, and HEALTHY
// when healthy. The archive is deterministic for a given version and
// health.
func BuildRelease(dir, version string, healthy bool) (Release, error) {
	if !versionRE.MatchString(version) {
		return Release{}, fmt.Errorf("build release: version %q must match %s", version, versionRE)
	}
	type entry struct {
		name string
		mode int64
		body string
	}
	entries := []entry{
		{"VERSION", 0o644, version + "\n"},
		{"bin/", 0o755, ""},
		{"bin/start", 0o755, startScript},
		{"bin/stop", 0o755, stopScript},
	}
	name := "release-" + version + ".tar.gz"
	if healthy {
		entries = append(entries, entry{"HEALTHY", 0o644, "ok\n"})
	} else {
		name = "release-" + version + "-broken.tar.gz"
	}

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf) // zero header: no name, no time
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Mode: e.mode, Size: int64(len(e.body)),
			ModTime: releaseTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		}
		if strings.HasSuffix(e.name, "/") {
			hdr.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return Release{}, fmt.Errorf("build release %s: %w", version, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			return Release{}, fmt.Errorf("build release %s: %w", version, err)
		}
	}
	if err := tw.Close(); err != nil {
		return Release{}, fmt.Errorf("build release %s: %w", version, err)
	}
	if err := zw.Close(); err != nil {
		return Release{}, fmt.Errorf("build release %s: %w", version, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return Release{}, fmt.Errorf("build release %s: %w", version, err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return Release{Path: path, SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len()), Version: version}, nil
}

// HealthHandler serves GET /health for the service deployed at deployPath:
// 200 when deployPath/.svc/running names a directory containing HEALTHY,
// 503 otherwise (not started, stopped, or a broken release).
func HealthHandler(deployPath string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		running, err := os.ReadFile(filepath.Join(deployPath, ".svc", "running"))
		if err != nil {
			http.Error(w, "not running", http.StatusServiceUnavailable)
			return
		}
		release := strings.TrimSpace(string(running))
		if release == "" || !filepath.IsAbs(release) {
			http.Error(w, "not running", http.StatusServiceUnavailable)
			return
		}
		if _, err := os.Stat(filepath.Join(release, "HEALTHY")); err != nil {
			http.Error(w, "unhealthy release", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok %s\n", filepath.Base(release))
	})
	return mux
}
