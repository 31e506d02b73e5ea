package store

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger for etcd's server and client that
// forwards errors (and worse) to logger and drops the rest: etcd logs
// several lines per request at info level, which would drown ours.
// Once *stopping is set, errors are logged at debug level: a closing etcd
// reports its own closed listeners as errors.
//
// etcd logs at fatal level when it cannot go on (it cannot purge its WAL,
// save raft state, commit to its database), often with locks held, so the
// process must end; but first a line of ours says so plainly, or the
// control plane would seem to vanish. exit is os.Exit outside tests.
func newZapLogger(logger *slog.Logger, stopping *atomic.Bool, exit func(int)) *zap.Logger {
	return zap.New(&slogCore{logger: logger, level: zapcore.ErrorLevel, stopping: stopping},
		zap.WithFatalHook(exitOnFatal{logger: logger, exit: exit}))
}

// exitOnFatal ends the process after etcd logged a fatal error.
type exitOnFatal struct {
	logger *slog.Logger
	exit   func(int)
}

var _ zapcore.CheckWriteHook = exitOnFatal{}

// OnWrite implements zapcore.CheckWriteHook.
func (h exitOnFatal) OnWrite(e *zapcore.CheckedEntry, _ []zapcore.Field) {
	h.logger.Error("the embedded etcd failed and cannot go on; the control plane exits now and must be restarted",
		"component", "store", "etcd_error", e.Message)
	h.exit(1)
}

// slogCore is a zapcore.Core that writes entries to a slog.Logger.
type slogCore struct {
	logger   *slog.Logger
	level    zapcore.Level
	stopping *atomic.Bool
	fields   []zapcore.Field
}

var _ zapcore.Core = (*slogCore)(nil)

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{logger: c.logger, level: c.level, stopping: c.stopping, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]slog.Attr, 0, len(keys)+1)
	attrs = append(attrs, slog.String("component", "etcd"))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	level := slog.LevelError
	switch {
	case c.stopping.Load():
		level = slog.LevelDebug
	case e.Level < zapcore.ErrorLevel:
		level = slog.LevelWarn
	}
	c.logger.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
