package kafka

import (
	"fmt"
	"sync"

	"github.com/etld/etld/internal/stages"
)

// All returns the factories of the kafka source and sink.
func All() []stages.Factory {
	return []stages.Factory{
		{
			Kind:      stages.KindSource,
			Type:      "kafka",
			Doc:       "Consumes Kafka topics in a consumer group; offsets are committed once the checkpoint covering them is saved, and each partition is a feed of an ordered merge.",
			NewConfig: func() any { return NewSourceConfig() },
			NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
				c, ok := cfg.(*SourceConfig)
				if !ok {
					return nil, fmt.Errorf("kafka source %q: config is %T, want *SourceConfig", s.ID, cfg)
				}
				return NewSource(s, c), nil
			},
		},
		{
			Kind:      stages.KindSink,
			Type:      "kafka",
			Doc:       "Produces records to a Kafka topic with an idempotent producer, confirmed before each checkpoint commits; transactional behind a kafka source, exactly once.",
			NewConfig: func() any { return NewSinkConfig() },
			NewSink: func(s stages.Settings, cfg any) (stages.Sink, error) {
				c, ok := cfg.(*SinkConfig)
				if !ok {
					return nil, fmt.Errorf("kafka sink %q: config is %T, want *SinkConfig", s.ID, cfg)
				}
				return NewSink(s, c), nil
			},
		},
	}
}

// The open kafka sources, by pipeline and source id: how a transactional
// sink finds the consumer group whose offsets join its transactions (the
// source of a record is its Origin.Source). A source registers at Open
// and leaves at Close; during a reload the newer instance wins.
var (
	sourcesMu sync.Mutex
	sources   = map[string]*Source{}
)

func sourceKey(pipeline, id string) string { return pipeline + "\x00" + id }

func registerSource(s *Source) {
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	sources[sourceKey(s.s.Pipeline, s.s.ID)] = s
}

func unregisterSource(s *Source) {
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	if k := sourceKey(s.s.Pipeline, s.s.ID); sources[k] == s {
		delete(sources, k)
	}
}

func lookupSource(pipeline, id string) *Source {
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	return sources[sourceKey(pipeline, id)]
}

// partitionOf returns the partition of one of the source's origins.
func (s *Source) partitionOf(o *stages.Origin) (tp, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byOrigin[o]
	return k, ok
}
