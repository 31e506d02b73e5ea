package sshexec

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	"github.com/pkg/sftp"
)

// Why several sessions: a channel may carry only as many unacknowledged
// bytes as the server's window for it, and OpenSSH opens session windows of
// 2 MiB that never grow. One channel over a 10 ms round trip therefore
// cannot exceed about 2 MiB / 10 ms ≈ 200 MiB/s however many SFTP requests
// are in flight — scp is held to the same bound. Several sessions (channels)
// on the same connection each bring their own window.
//
// The source is still read once, sequentially, by one goroutine that hashes
// every chunk before handing it to the session writers: the SHA-256
// describes exactly the bytes that were written, and any io.Reader works.
// Chunks are single SFTP writes at their own offsets, so which session
// writes which chunk does not matter and a slower session takes fewer.

const (
	// parallelUploadMin is the smallest upload, by known size, spread over
	// several sessions; below it the extra sessions' set-up round trips
	// cost more than their windows save.
	parallelUploadMin = 32 << 20
	// sessionInflightBytes is how much each session keeps in flight: a
	// little more than OpenSSH's 2 MiB window, so the window, not our
	// pipeline, is what waits for acknowledgements, over a long round trip
	// (what this path is for; see sftpInflightBytes for its cost on a fast
	// link). Each byte in flight is a buffered byte: about 13 MiB per
	// upload with 4 sessions.
	sessionInflightBytes = 3 << 20
	// sessionMaxWriters caps the writes in flight per session.
	sessionMaxWriters = 64
)

// uploadSize reports how many bytes remain in src when that is known
// without reading: a regular file (from its current offset), or a reader
// with Len (bytes.Reader, strings.Reader, bytes.Buffer).
func uploadSize(src io.Reader) (int64, bool) {
	switch r := src.(type) {
	case interface{ Len() int }:
		return int64(r.Len()), true
	case interface {
		Stat() (fs.FileInfo, error)
		io.Seeker
	}:
		fi, err := r.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return 0, false
		}
		pos, err := r.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, false
		}
		return max(fi.Size()-pos, 0), true
	}
	return 0, false
}

// uploadChunk is one SFTP write: buf[:n] goes to offset off.
type uploadChunk struct {
	buf []byte
	n   int
	off int64
}

// parallelUpload writes one remote file through the Client's SFTP session
// and up to sessions-1 extra ones opened for it.
type parallelUpload struct {
	c          *Client
	remotePath string
	chunkSize  int // the session's SFTP write size
	writers    int // concurrent writes per session
	maxBufs    int // chunk buffers at most

	work chan uploadChunk // filled by read, closed when it stops
	free chan []byte      // buffers written and ready for reuse
	bufs int              // buffers allocated; only read touches it

	used atomic.Int32 // sessions that wrote at least one chunk

	failed   chan struct{} // closed at the first error
	failOnce sync.Once
	err      error // the first error; written before failed is closed

	mu      sync.Mutex
	extras  []sftpSession // guarded by mu; closed by run or abort
	aborted bool          // guarded by mu; abort ran, sessions opened late are closed at once
}

func newParallelUpload(c *Client, remotePath string, writeSize, sessions int) *parallelUpload {
	writers := min(max(sessionInflightBytes/writeSize+1, 2), sessionMaxWriters)
	maxBufs := sessions*writers + sessions
	return &parallelUpload{
		c:          c,
		remotePath: remotePath,
		chunkSize:  writeSize,
		writers:    writers,
		maxBufs:    maxBufs,
		work:       make(chan uploadChunk, sessions),
		free:       make(chan []byte, maxBufs),
		failed:     make(chan struct{}),
	}
}

// fail records the first error and stops the reader and the writers.
func (u *parallelUpload) fail(err error) {
	u.failOnce.Do(func() {
		u.err = err
		close(u.failed)
	})
}

// firstErr returns the first error, or nil while there is none.
func (u *parallelUpload) firstErr() error {
	select {
	case <-u.failed:
		return u.err
	default:
		return nil
	}
}

func (u *parallelUpload) hasFailed() bool {
	select {
	case <-u.failed:
		return true
	default:
		return false
	}
}

// run creates the remote file on main with mode, writes src into it over
// main and the extra sessions, and returns the bytes read and their
// SHA-256. It returns when every write has been answered and every handle
// closed; the extra sessions are then shut down in the background.
func (u *parallelUpload) run(main *sftp.Client, src io.Reader, mode fs.FileMode, sessions int) (int64, []byte, error) {
	f, err := main.OpenFile(u.remotePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return 0, nil, err
	}
	// Before the data, so the content is never readable with the server's
	// default permissions.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return 0, nil, err
	}
	var wg sync.WaitGroup
	var closeMu sync.Mutex
	var closeErr error // guarded by closeMu: the first error closing a handle
	closeFile := func(f *sftp.File) {
		if err := f.Close(); err != nil {
			closeMu.Lock()
			closeErr = cmp.Or(closeErr, err)
			closeMu.Unlock()
		}
	}
	u.startWriters(&wg, f, closeFile)
	for range sessions - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.addSession(&wg, closeFile)
		}()
	}
	n, sum := u.read(src)
	wg.Wait()
	u.closeExtras(false)
	if err := u.firstErr(); err != nil {
		return n, nil, err
	}
	if closeErr != nil {
		return n, nil, closeErr
	}
	return n, sum, nil
}

// startWriters starts the writers of one session; the last one to finish
// closes f.
func (u *parallelUpload) startWriters(wg *sync.WaitGroup, f *sftp.File, closeFile func(*sftp.File)) {
	if u.c.onUploadSession != nil {
		u.c.onUploadSession()
	}
	var left sync.WaitGroup
	var wrote atomic.Bool
	left.Add(u.writers)
	wg.Add(u.writers + 1)
	for range u.writers {
		go func() {
			defer wg.Done()
			defer left.Done()
			if u.write(f) {
				wrote.Store(true)
			}
		}()
	}
	go func() {
		defer wg.Done()
		left.Wait()
		if wrote.Load() {
			u.used.Add(1)
		}
		closeFile(f)
	}()
}

// write sends chunks until the reader is done, and reports whether it
// wrote any. After a failure it only recycles what is queued, so that the
// reader is never stuck.
func (u *parallelUpload) write(f *sftp.File) (wrote bool) {
	for ch := range u.work {
		if !u.hasFailed() {
			if _, err := f.WriteAt(ch.buf[:ch.n], ch.off); err != nil {
				u.fail(err)
			} else {
				wrote = true
			}
		}
		u.free <- ch.buf
	}
	return wrote
}

// addSession opens one more SFTP session and file handle and starts its
// writers. A session that cannot be opened is not an error: the upload
// goes on over the others, as it must for servers with a low MaxSessions.
func (u *parallelUpload) addSession(wg *sync.WaitGroup, closeFile func(*sftp.File)) {
	st, err := openSFTP(u.c.conn, u.chunkSize)
	if err != nil {
		u.c.log.Debug("extra sftp session not opened; uploading over fewer", "error", err)
		return
	}
	u.mu.Lock()
	if u.aborted {
		u.mu.Unlock()
		st.close()
		return
	}
	u.extras = append(u.extras, st)
	u.mu.Unlock()
	if u.hasFailed() {
		return
	}
	// The main session created and truncated the file already.
	f, err := st.client.OpenFile(u.remotePath, os.O_WRONLY)
	if err != nil {
		u.c.log.Debug("extra sftp session cannot open the file; uploading over fewer", "error", err)
		return
	}
	u.startWriters(wg, f, closeFile)
}

// read feeds src to the writers in chunks, hashing each first, and closes
// work when src ends or the upload fails.
func (u *parallelUpload) read(src io.Reader) (int64, []byte) {
	defer close(u.work)
	h := sha256.New()
	var off int64
	for {
		buf, ok := u.buffer()
		if !ok {
			return off, nil
		}
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			h.Write(buf[:n])
			select {
			case u.work <- uploadChunk{buf: buf, n: n, off: off}:
			case <-u.failed:
				return off, nil
			}
			off += int64(n)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return off, h.Sum(nil)
		default:
			u.fail(err)
			return off, nil
		}
	}
}

// buffer returns a free chunk buffer, allocating up to maxBufs, or false
// once the upload failed.
func (u *parallelUpload) buffer() ([]byte, bool) {
	select {
	case b := <-u.free:
		return b, true
	default:
	}
	if u.bufs < u.maxBufs {
		u.bufs++
		return make([]byte, u.chunkSize), true
	}
	select {
	case b := <-u.free:
		return b, true
	case <-u.failed:
		return nil, false
	}
}

// closeExtras shuts the extra sessions down in the background. After a
// finished run every write was answered and nothing depends on them; after
// abort (drain true) writes may still be in flight, so a later Upload waits
// for the sessions to end.
func (u *parallelUpload) closeExtras(drain bool) {
	u.mu.Lock()
	extras := u.extras
	u.extras = nil
	u.mu.Unlock()
	for _, st := range extras {
		switch {
		case drain:
			u.c.drain(st.close)
		case !u.c.goOwned(st.close):
			st.close()
		}
	}
}

// abort ends the extra sessions now, failing their writes in flight, and
// makes sessions still being opened close at once. The caller aborts the
// main session.
func (u *parallelUpload) abort() {
	u.fail(errAborted)
	u.mu.Lock()
	u.aborted = true
	u.mu.Unlock()
	u.closeExtras(true)
}

var errAborted = errors.New("upload aborted")
