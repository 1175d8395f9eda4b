package client

// SetQueueLimit bounds the pushes a client queues for delivery, so that
// tests can make the queue overflow.
func SetQueueLimit(c *Config, n int) { c.queueLimit = n }

// SetLateCatchUp makes each connection's late catch-up start when trigger
// is closed.
func SetLateCatchUp(c *Config, trigger <-chan struct{}) { c.lateCatchUp = trigger }
