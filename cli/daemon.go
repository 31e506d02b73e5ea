package cli

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/outposthq/outpost/internal/telemetry"
)

// What the daemon verbs (controlplane, gateway, dev) share: repeatable
// flags, logging, tracing and a bounded shutdown.

// shutdownTimeout bounds a daemon's graceful shutdown; after it, the
// daemon stops hard.
const shutdownTimeout = 30 * time.Second

// stringList is a flag that may be given several times, and whose values
// may also be comma-separated ("--etcd-endpoints https://a:2379,https://b:2379").
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// logFlags registers --log-level and --log-format.
type logFlags struct {
	level, format *string
}

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		level:  fs.String("log-level", "info", "log level: debug, info, warn, error"),
		format: fs.String("log-format", "text", "log format: text or json (one object per line)"),
	}
}

// logger builds the daemon's logger on w (standard error).
func (f logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(*f.level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", *f.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch *f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", *f.format)
}

// tracing builds the tracer provider for --otel-endpoint (a no-op when
// empty) and logs where spans go.
func tracing(ctx context.Context, svc telemetry.Service, endpoint string, log *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	svc.Version = version
	tp, shutdown, err := telemetry.NewTracerProvider(ctx, svc, endpoint)
	if err != nil {
		return nil, nil, usagef("--otel-endpoint: %v", err)
	}
	if endpoint != "" {
		log.Info("exporting traces over OTLP/gRPC", "endpoint", endpoint, "service", svc.Name)
	}
	return tp, shutdown, nil
}

const otelEndpointHelp = "OTLP/gRPC collector `host:port` or URL for traces (plaintext to loopback hosts); empty: no export"

// raiseFileLimit raises the open file limit (RLIMIT_NOFILE) to its hard
// limit, logs it, and returns the limit in force (0 when unknown). Go
// raises it at start on Linux already; this makes sure, and the log line
// tells an operator what the connection limits were derived from.
func raiseFileLimit(log *slog.Logger) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open file limit", "err", err)
		return 0
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("cannot raise the open file limit to its hard limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
			return lim.Cur
		}
		lim = raised
	}
	log.Info("open file limit", "nofile", lim.Cur)
	return lim.Cur
}

// runningServer is what a daemon verb needs of the server it runs.
type runningServer interface {
	Done() <-chan struct{}
	Err() error
	Shutdown(context.Context) error
}

// serveUntil waits until ctx ends (an interrupt) or srv fails by itself,
// then shuts srv down. A failure is the error, so the daemon exits
// non-zero and a supervisor restarts it.
func serveUntil(ctx context.Context, srv runningServer) error {
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	sctx, cancel := shutdownContext()
	defer cancel()
	err := srv.Shutdown(sctx)
	if ferr := srv.Err(); ferr != nil {
		// The server logged its failure as it happened.
		return &exitError{code: 1, err: ferr, logged: true}
	}
	return err
}

// shutdownContext is the context for stopping a daemon after its run
// context ended: fresh, since that one is done, and bounded.
func shutdownContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), shutdownTimeout)
}
