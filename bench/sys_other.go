//go:build !linux

package bench

import "syscall"

// bindNoPort does nothing here: the option is Linux's.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }

// childAttr sets nothing here: a killed run may leave its children.
func childAttr() *syscall.SysProcAttr { return nil }
