package connector

import (
	"errors"
	"testing"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestOutcomeErrorKeepsNoRecordMemory: outcomes share their record's
// memory (schema.DecodeOutcomeBatch), and a rejection's error may be kept
// long after, so it holds a copy of the message: overwriting the record
// leaves it as it was.
func TestOutcomeErrorKeepsNoRecordMemory(t *testing.T) {
	const message = "alice is not a member of the conversation"
	v, err := (&parleyv1.OutcomeBatch{Node: "node-a", Outcomes: []*parleyv1.Outcome{{
		MsgId: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", Status: parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED,
		Reason: parleyv1.Reason_REASON_NOT_MEMBER, Message: message,
	}}}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	outs, err := decodeOutcomeBatch("node-a", []byte("node-a"), v)
	if err != nil || len(outs) != 1 {
		t.Fatalf("decoded %v, %v", outs, err)
	}
	_, err = outcome(outs[0])
	for i := range v {
		v[i] = 'x'
	}
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.Message != message || rej.Reason != parleyv1.Reason_REASON_NOT_MEMBER {
		t.Fatalf("after the record was overwritten: %v", err)
	}
	if outs[0].Message == message {
		t.Fatal("the outcome does not share the record's memory: the test proves nothing")
	}
}
