package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed cql/*.cql
var cqlFiles embed.FS

// Migration is one CQL schema version of the timeline store.
type Migration struct {
	// Version is the number the file name starts with.
	Version int
	Name    string
	// Statements are the file's statements, comments removed, in order.
	Statements []string
}

// CQLMigrations returns the timeline store's CQL migrations (schema/cql/*.cql)
// in order.
func CQLMigrations() ([]Migration, error) {
	names, err := fs.Glob(cqlFiles, "cql/*.cql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Migration
	for _, name := range names {
		b, err := cqlFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		base := strings.TrimPrefix(name, "cql/")
		var v int
		if _, err := fmt.Sscanf(base, "%04d_", &v); err != nil || v < 1 {
			return nil, fmt.Errorf("schema: migration %s does not start with a version number", base)
		}
		if len(out) > 0 && out[len(out)-1].Version >= v {
			return nil, fmt.Errorf("schema: migration %s repeats or reorders version %d", base, v)
		}
		out = append(out, Migration{Version: v, Name: base, Statements: splitCQL(string(b))})
	}
	return out, nil
}

// splitCQL splits a file into statements at semicolons, dropping "--"
// comment lines. The schema files hold no string literals with ';' or "--".
func splitCQL(src string) []string {
	var lines []string
	for _, l := range strings.Split(src, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
			lines = append(lines, l)
		}
	}
	var out []string
	for _, st := range strings.Split(strings.Join(lines, "\n"), ";") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}
