package client

import gojson "github.com/goccy/go-json"

// decodeFrame decodes a server frame. Every event a device receives passes
// here, a history page holds up to 1,000 of them, and encoding/json took
// most of a catch-up's time in the client: goccy/go-json decodes the same
// Go types to the same values about five times faster
// (BenchmarkDecodeHistoryPage; FuzzDecodeFrame checks they agree).
func decodeFrame(data []byte, f *frame) error { return gojson.Unmarshal(data, f) }
