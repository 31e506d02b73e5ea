package watchhub

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The feeds keep records as etcd holds them, which is their protobuf
// encoding, and responses carry them as encoded fields: a
// WatchRolloutResponse whose event is set as raw field bytes (its
// unknown fields, which protobuf marshals by copying them). So a record
// is encoded once, by whoever wrote it, and a snapshot page once, by the
// first watcher that sends it, however many watchers send them; and the
// bytes are shared, never copied per watcher but into the wire.

// Field numbers of WatchRolloutResponse and WatchNodePage.
const (
	fieldRollout  protowire.Number = 2
	fieldNode     protowire.Number = 3
	fieldNodePage protowire.Number = 6
	fieldPageNode protowire.Number = 1
)

// response returns a response at revision rev whose event is the encoded
// field event. The response shares event: neither may be modified.
func response(rev int64, event []byte) *outpostv1.WatchRolloutResponse {
	m := &outpostv1.WatchRolloutResponse{Revision: rev}
	m.ProtoReflect().SetUnknown(protoreflect.RawFields(event))
	return m
}

// rolloutField encodes a rollout record as the response's rollout field.
func rolloutField(val []byte) []byte {
	return bytesField(nil, fieldRollout, val)
}

// nodeField encodes a node record as the response's node field.
func nodeField(val []byte) []byte {
	return bytesField(nil, fieldNode, val)
}

func bytesField(b []byte, num protowire.Number, val []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, val)
}

// pageCost is the bytes a node record of n bytes adds to a page.
func pageCost(n int) int {
	return protowire.SizeTag(fieldPageNode) + protowire.SizeBytes(n)
}

// nodePages encodes vals as node_page fields of at most pageSize nodes
// and, unless one node alone is bigger, maxPageBytes. ends[i] is the
// index in vals after the last node of fields[i].
func nodePages(vals [][]byte, pageSize int) (fields [][]byte, ends []int) {
	for start := 0; start < len(vals); {
		end, inner := start, 0
		for end < len(vals) && end-start < pageSize && (end == start || pageOverhead+inner+pageCost(len(vals[end])) <= maxPageBytes) {
			inner += pageCost(len(vals[end]))
			end++
		}
		b := make([]byte, 0, protowire.SizeTag(fieldNodePage)+protowire.SizeBytes(inner))
		b = protowire.AppendTag(b, fieldNodePage, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(inner))
		for _, v := range vals[start:end] {
			b = bytesField(b, fieldPageNode, v)
		}
		fields = append(fields, b)
		ends = append(ends, end)
		start = end
	}
	return fields, ends
}
