package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/outposthq/outpost/controlplane/artifact"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fetchChunk is the size of FetchArtifact chunks (the API promises at most 1 MiB).
const fetchChunk = 1 << 20

// artifactService implements outpostv1.ArtifactService.
type artifactService struct {
	outpostv1.UnimplementedArtifactServiceServer
	s *Server
}

// UploadArtifact stores an artifact by content: the store hashes the bytes
// while writing and keeps them only if size and SHA-256 match the header.
func (a *artifactService) UploadArtifact(stream grpc.ClientStreamingServer[outpostv1.UploadArtifactRequest, outpostv1.UploadArtifactResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fieldError("header", "required: the first message carries the header")
		}
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return fieldError("header", "required: the first message carries the header")
	}
	if err := artifact.CheckDigest(h.GetSha256()); err != nil {
		return fieldError("header.sha256", "%v", err)
	}
	if h.GetSize() < 0 {
		return fieldError("header.size", "must not be negative")
	}
	if h.GetName() != "" && !fileNameRE.MatchString(h.GetName()) {
		return fieldError("header.name", "%q: base name of letters, digits, '.', '_' or '-'", h.GetName())
	}
	if meta, found, err := a.s.artifacts.Stat(h.GetSha256()); err != nil {
		return internal(err)
	} else if found {
		if meta.Size != h.GetSize() {
			return fieldError("header.size", "%d, but the stored artifact with this sha256 has %d bytes", h.GetSize(), meta.Size)
		}
		return stream.SendAndClose(&outpostv1.UploadArtifactResponse{Artifact: artifactOf(meta), AlreadyPresent: true})
	}
	meta, present, err := a.s.artifacts.Put(stream.Context(), &chunkReader{stream: stream}, artifact.Meta{
		SHA256: h.GetSha256(), Size: h.GetSize(), Name: h.GetName(),
	})
	switch {
	case errors.Is(err, artifact.ErrMismatch):
		return status.Errorf(codes.InvalidArgument, "upload does not match its header: %v", err)
	case errors.Is(err, errNotChunk):
		return fieldError("chunk", "%v", err)
	case err != nil:
		return internal(err)
	}
	a.s.log.Info("artifact stored", "sha256", meta.SHA256, "size", meta.Size, "name", meta.Name, "already_present", present)
	return stream.SendAndClose(&outpostv1.UploadArtifactResponse{Artifact: artifactOf(meta), AlreadyPresent: present})
}

var errNotChunk = errors.New("every message after the header must be a chunk")

// chunkReader reads an upload's chunks as one byte stream.
type chunkReader struct {
	stream grpc.ClientStreamingServer[outpostv1.UploadArtifactRequest, outpostv1.UploadArtifactResponse]
	buf    []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		m, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end
		}
		if _, ok := m.GetPayload().(*outpostv1.UploadArtifactRequest_Chunk); !ok {
			return 0, errNotChunk
		}
		r.buf = m.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func artifactOf(m artifact.Meta) *outpostv1.Artifact {
	return &outpostv1.Artifact{Sha256: m.SHA256, Size: m.Size, Name: m.Name}
}

// StatArtifact reports whether an artifact is stored.
func (a *artifactService) StatArtifact(ctx context.Context, req *outpostv1.StatArtifactRequest) (*outpostv1.StatArtifactResponse, error) {
	if err := artifact.CheckDigest(req.GetSha256()); err != nil {
		return nil, fieldError("sha256", "%v", err)
	}
	meta, found, err := a.s.artifacts.Stat(req.GetSha256())
	if err != nil {
		return nil, internal(err)
	}
	if !found {
		return &outpostv1.StatArtifactResponse{}, nil
	}
	return &outpostv1.StatArtifactResponse{Artifact: artifactOf(meta), Found: true}, nil
}

// fetchArtifact streams a stored artifact from offset in chunks.
func (s *Server) fetchArtifact(req *outpostv1.FetchArtifactRequest, stream grpc.ServerStreamingServer[outpostv1.FetchArtifactResponse]) error {
	if err := artifact.CheckDigest(req.GetSha256()); err != nil {
		return fieldError("sha256", "%v", err)
	}
	f, meta, err := s.artifacts.Open(req.GetSha256())
	if errors.Is(err, artifact.ErrNotFound) {
		return status.Errorf(codes.NotFound, "artifact sha256:%s not found", req.GetSha256())
	}
	if err != nil {
		return internal(err)
	}
	defer f.Close()
	off := req.GetOffset()
	if off < 0 || off > meta.Size {
		return status.Errorf(codes.OutOfRange, "offset %d outside the artifact's %d bytes", off, meta.Size)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return internal(fmt.Errorf("seek: %w", err))
	}
	s.fetchMet.fetches.Inc()
	buf := make([]byte, fetchChunk)
	first := &outpostv1.FetchArtifactResponse{Artifact: artifactOf(meta)}
	for sent := off; ; {
		n, err := io.ReadFull(f, buf[:min(int64(fetchChunk), meta.Size-sent)])
		if err != nil && !errors.Is(err, io.EOF) {
			return internal(fmt.Errorf("read artifact: %w", err))
		}
		m := &outpostv1.FetchArtifactResponse{Chunk: buf[:n]}
		if first != nil {
			first.Chunk = buf[:n]
			m, first = first, nil
		}
		if err := stream.Send(m); err != nil {
			return err
		}
		s.fetchMet.sentBytes.Add(float64(n))
		sent += int64(n)
		if sent >= meta.Size || n == 0 {
			return nil
		}
	}
}
