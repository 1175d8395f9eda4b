package schema

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// SetBody sets cmd's body to b, which must be one of the command body
// messages (*parleyv1.Send, Edit, Revoke, Create, AddMembers, RemoveMembers,
// Read); nil clears it. It returns cmd, for chaining.
func SetBody(cmd *parleyv1.Command, b proto.Message) (*parleyv1.Command, error) {
	switch b := b.(type) {
	case nil:
		cmd.Body = nil
	case *parleyv1.Send:
		cmd.Body = &parleyv1.Command_Send{Send: b}
	case *parleyv1.Edit:
		cmd.Body = &parleyv1.Command_Edit{Edit: b}
	case *parleyv1.Revoke:
		cmd.Body = &parleyv1.Command_Revoke{Revoke: b}
	case *parleyv1.Create:
		cmd.Body = &parleyv1.Command_Create{Create: b}
	case *parleyv1.AddMembers:
		cmd.Body = &parleyv1.Command_AddMembers{AddMembers: b}
	case *parleyv1.RemoveMembers:
		cmd.Body = &parleyv1.Command_RemoveMembers{RemoveMembers: b}
	case *parleyv1.Read:
		cmd.Body = &parleyv1.Command_Read{Read: b}
	default:
		return cmd, fmt.Errorf("schema: %T is not a command body", b)
	}
	return cmd, nil
}
