package schema

import (
	"strings"
	"time"
)

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
	// Presence: compacted; which node holds which users' devices, and each
	// node's heartbeat (presence.proto). Written by connectors.
	Presence string
	// Ephemeral: key conv, value parleyv1.Typing; short retention, never
	// part of the record. Written by connectors, read by fanout.
	Ephemeral string
	// Notifications: key user, value parleyv1.Notification: message events
	// for recipients with no online device. Written by fanout.
	Notifications string
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
		Presence:       prefix + "presence",
		Ephemeral:      prefix + "ephemeral",
		Notifications:  prefix + "notifications",
	}
}

// MaxHeartbeatInterval bounds the heartbeat interval a connector announces
// in presence; a heartbeat beyond it is malformed.
const MaxHeartbeatInterval = 24 * time.Hour

// PresenceNodeKey is the presence key of node's heartbeat.
func PresenceNodeKey(node string) string { return "n/" + node }

// PresenceUserKey is the presence key of user's devices on node.
func PresenceUserKey(user, node string) string { return "u/" + user + "/" + node }

// ParsePresenceKey splits a presence key: a node key gives ("", node), a
// user key (user, node); ok is false for anything else.
func ParsePresenceKey(key string) (user, node string, ok bool) {
	switch {
	case strings.HasPrefix(key, "n/"):
		node = key[2:]
		return "", node, node != "" && !strings.Contains(node, "/")
	case strings.HasPrefix(key, "u/"):
		user, node, ok = strings.Cut(key[2:], "/")
		return user, node, ok && user != "" && node != "" && !strings.Contains(node, "/")
	}
	return "", "", false
}
