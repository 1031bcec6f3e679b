package standin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
)

// The request schemas, restated from Firecracker's swagger (v1.16) on
// purpose rather than taken from the client's types: the stand-in judges
// what the client sends, so it must not share the client's idea of it.

type kind int

const (
	kString kind = iota
	kInt
	kBool
	kObject
	kArray
)

func (k kind) String() string {
	return [...]string{"string", "integer", "boolean", "object", "array"}[k]
}

type field struct {
	kind     kind
	required bool
	enum     []string // allowed values of a string
}

type schema map[string]field

var (
	rateLimiter = field{kind: kObject}

	bootSourceSchema = schema{
		"kernel_image_path": {kind: kString, required: true},
		"boot_args":         {kind: kString},
		"initrd_path":       {kind: kString},
	}
	machineConfigSchema = schema{
		"vcpu_count":        {kind: kInt, required: true},
		"mem_size_mib":      {kind: kInt, required: true},
		"smt":               {kind: kBool},
		"track_dirty_pages": {kind: kBool},
		"huge_pages":        {kind: kString, enum: []string{"None", "2M"}},
		"cpu_template":      {kind: kString, enum: []string{"C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"}},
	}
	driveSchema = schema{
		"drive_id":       {kind: kString, required: true},
		"is_root_device": {kind: kBool, required: true},
		"path_on_host":   {kind: kString},
		"is_read_only":   {kind: kBool},
		"partuuid":       {kind: kString},
		"cache_type":     {kind: kString, enum: []string{"Unsafe", "Writeback"}},
		"io_engine":      {kind: kString, enum: []string{"Sync", "Async"}},
		"rate_limiter":   rateLimiter,
		"socket":         {kind: kString},
	}
	netSchema = schema{
		"iface_id":        {kind: kString, required: true},
		"host_dev_name":   {kind: kString, required: true},
		"guest_mac":       {kind: kString},
		"mtu":             {kind: kInt},
		"rx_rate_limiter": rateLimiter,
		"tx_rate_limiter": rateLimiter,
	}
	vsockSchema = schema{
		"guest_cid": {kind: kInt, required: true},
		"uds_path":  {kind: kString, required: true},
		"vsock_id":  {kind: kString},
	}
	entropySchema = schema{"rate_limiter": rateLimiter}
	serialSchema  = schema{"serial_out_path": {kind: kString}, "rate_limiter": {kind: kObject}}
	loggerSchema  = schema{
		"log_path":        {kind: kString},
		"level":           {kind: kString, enum: []string{"Error", "Warning", "Info", "Debug", "Trace", "Off"}},
		"show_level":      {kind: kBool},
		"show_log_origin": {kind: kBool},
		"module":          {kind: kString},
	}
	actionSchema = schema{"action_type": {kind: kString, required: true,
		enum: []string{"InstanceStart", "FlushMetrics", "SendCtrlAltDel"}}}
	vmStateSchema        = schema{"state": {kind: kString, required: true, enum: []string{"Paused", "Resumed"}}}
	snapshotCreateSchema = schema{
		"snapshot_type": {kind: kString, enum: []string{"Full", "Diff"}},
		"snapshot_path": {kind: kString, required: true},
		"mem_file_path": {kind: kString, required: true},
	}
	snapshotLoadSchema = schema{
		"snapshot_path":         {kind: kString, required: true},
		"mem_backend":           {kind: kObject},
		"mem_file_path":         {kind: kString},
		"track_dirty_pages":     {kind: kBool},
		"enable_diff_snapshots": {kind: kBool},
		"resume_vm":             {kind: kBool},
		"network_overrides":     {kind: kArray},
		"vsock_override":        {kind: kObject},
		"clock_realtime":        {kind: kBool},
	}
)

// check validates body against s: a JSON object, no unknown fields, every
// required field present, every field of its type and enum. It returns
// the decoded object.
func (s schema) check(body []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, fmt.Errorf("invalid JSON body: %v", errOr(err, "not an object"))
	}
	if dec.More() {
		return nil, fmt.Errorf("invalid JSON body: trailing data")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := s[k]
		if !ok {
			return nil, fmt.Errorf("unknown field `%s`", k)
		}
		if err := f.check(k, obj[k]); err != nil {
			return nil, err
		}
	}
	req := make([]string, 0, len(s))
	for k, f := range s {
		if f.required {
			req = append(req, k)
		}
	}
	sort.Strings(req)
	for _, k := range req {
		if _, ok := obj[k]; !ok {
			return nil, fmt.Errorf("missing field `%s`", k)
		}
	}
	return obj, nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func (f field) check(name string, raw json.RawMessage) error {
	bad := func() error { return fmt.Errorf("invalid type for field `%s`: expected %s", name, f.kind) }
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return bad()
	}
	switch f.kind {
	case kString:
		var s string
		if json.Unmarshal(t, &s) != nil {
			return bad()
		}
		if f.enum != nil && !contains(f.enum, s) {
			return fmt.Errorf("unknown variant `%s` for field `%s`, expected one of %s", s, name, strings.Join(f.enum, ", "))
		}
	case kInt:
		var n uint64
		if json.Unmarshal(t, &n) != nil {
			return bad()
		}
	case kBool:
		var b bool
		if json.Unmarshal(t, &b) != nil {
			return bad()
		}
	case kObject:
		if t[0] != '{' {
			return bad()
		}
	case kArray:
		if t[0] != '[' {
			return bad()
		}
	}
	return nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func str(obj map[string]json.RawMessage, k string) string {
	var s string
	json.Unmarshal(obj[k], &s)
	return s
}

func num(obj map[string]json.RawMessage, k string) uint64 {
	var n uint64
	json.Unmarshal(obj[k], &n)
	return n
}

func boolean(obj map[string]json.RawMessage, k string) bool {
	var b bool
	json.Unmarshal(obj[k], &b)
	return b
}

func has(obj map[string]json.RawMessage, k string) bool { _, ok := obj[k]; return ok }

// validID is Firecracker's rule for ids in paths.
func validID(id string) bool {
	if id == "" {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func validMAC(s string) bool {
	hw, err := net.ParseMAC(s)
	return err == nil && len(hw) == 6 && len(s) == 17
}
