package schema

// DefaultTopicPrefix is prepended to every topic name unless configured
// otherwise.
const DefaultTopicPrefix = "parley."

// Topics holds the full names of Parley's topics for one prefix.
type Topics struct {
	// Commands: key conv, value parleyv1.Command. Written by connectors.
	Commands string
	// Events: key conv, value parleyv1.Event. Written by the sequencer in
	// transactions; the system of record.
	Events string
	// Outcomes: key connector node id, value parleyv1.OutcomeBatch, on the
	// partition the command named. Written by the sequencer in the same
	// transactions as the events.
	Outcomes string
	// SequencerState: the sequencer's compacted per-conversation changelog,
	// co-partitioned with Commands.
	SequencerState string
}

// TopicNames returns the topic names for prefix ("" means DefaultTopicPrefix).
func TopicNames(prefix string) Topics {
	if prefix == "" {
		prefix = DefaultTopicPrefix
	}
	return Topics{
		Commands:       prefix + "commands",
		Events:         prefix + "events",
		Outcomes:       prefix + "outcomes",
		SequencerState: prefix + "sequencer-state",
	}
}
