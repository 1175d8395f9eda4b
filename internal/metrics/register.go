package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg (nil: a private registry) and returns it,
// or the collector of the same type already registered under the same
// descriptors: roles of one process share one registry, and two instances
// of a role in one process share their metrics.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// replacing is a Registerer on which registering a collector replaces the
// one registered under the same descriptors, rather than failing: a client
// re-created after a failure takes the place of the one it replaces.
type replacing struct{ prometheus.Registerer }

func (r replacing) Register(c prometheus.Collector) error {
	r.Registerer.Unregister(c)
	return r.Registerer.Register(c)
}

func (r replacing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
