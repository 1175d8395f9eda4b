package kafka

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// slogLogger adapts slog to kgo.Logger, passing on warnings and errors only:
// the client's info logs are per-request chatter.
type slogLogger struct{ l *slog.Logger }

func newLogger(l *slog.Logger) kgo.Logger { return slogLogger{l.With("component", "kafka")} }

func (s slogLogger) Level() kgo.LogLevel {
	// The client's info logs are per-request chatter: only below debug.
	if s.l.Enabled(context.Background(), slog.LevelDebug-4) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (s slogLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var lv slog.Level
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	case kgo.LogLevelInfo:
		lv = slog.LevelInfo
	default:
		lv = slog.LevelDebug
	}
	s.l.Log(context.Background(), lv, msg, keyvals...)
}
