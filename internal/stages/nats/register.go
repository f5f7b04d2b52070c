package nats

import "github.com/etld/etld/internal/stages"

// All returns the factories of the nats source and sink.
func All() []stages.Factory { return []stages.Factory{sourceFactory(), sinkFactory()} }
