// Package standin is a test-only stand-in for Firecracker: it serves
// Firecracker's API (v1.16) on a unix socket with its rules — pre- and
// post-boot endpoints, required fields, value ranges, unknown fields,
// status codes and fault_message bodies, as docs/firecracker.md and the
// reference list them — and on InstanceStart runs the guest on QEMU
// through the qemu backend, bridging hybrid vsock (CONNECT <port>) to the
// guest agent. It lets the Firecracker backend run for real on hosts
// where Firecracker cannot (no KVM); it proves the API contract, not
// Firecracker itself.
package standin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is what GET /version reports.
const Version = "1.16.1"

// maxPayload is Firecracker's default --http-api-max-payload-size.
const maxPayload = 51200

// Drive is one configured block device.
type Drive struct {
	ID string
	// Path is absolute (resolved when the drive was PUT, as Firecracker
	// opens it then); Given is the path as the client sent it, which a
	// snapshot records.
	Path     string
	Given    string
	Root     bool
	ReadOnly bool
}

// NIC is one configured network interface.
type NIC struct {
	ID, TAP, MAC string
}

// Config is the VM as configured through the API when InstanceStart comes.
type Config struct {
	ID        string
	Kernel    string
	Initrd    string
	BootArgs  string
	VCPUs     int
	MemMiB    int
	Drives    []Drive // root first, then in PUT order (Firecracker's order)
	NICs      []NIC
	SerialOut string
	Entropy   bool
	VsockCID  uint32
	VsockPath string // as given: a snapshot records it
}

// Guest is a running guest.
type Guest interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// DialAgent connects to the guest's vsock port.
	DialAgent(ctx context.Context, port uint32) (net.Conn, error)
	// Done is closed when the guest has stopped.
	Done() <-chan struct{}
	// Kill stops the guest at once.
	Kill()
}

// Runner boots a guest from a Config.
type Runner func(ctx context.Context, cfg Config) (Guest, error)

// Snapshotter is a Guest that can be saved.
type Snapshotter interface {
	// Snapshot saves the paused guest into dir, which must not exist.
	Snapshot(ctx context.Context, dir string) error
}

// LoadConfig is a snapshot load: the saved guest and what replaces the
// host resources it named.
type LoadConfig struct {
	ID        string
	Saved     string // the guest's own snapshot directory
	SerialOut string
	NICs      []NIC   // the clone's TAPs, in the snapshot's order
	Drives    []Drive // as the snapshot names them, resolved in the loading process
	AgentPort uint32
}

// Loader restores a guest from a snapshot.
type Loader func(ctx context.Context, cfg LoadConfig) (Guest, error)

// Server is the stand-in's API and VM state.
type Server struct {
	Log  *slog.Logger
	Run  Runner
	Load Loader
	// Root is the jail root under the stand-in jailer: absolute paths in
	// requests are inside it, as for a chrooted Firecracker ("" = "/"),
	// and files must belong to Owner (the jail's uid) or be readable by all.
	Root  string
	Owner int

	mu       sync.Mutex
	cfg      Config
	bootSet  bool
	mcSet    bool
	drives   []Drive
	nics     []NIC
	started  bool
	paused   bool
	guest    Guest
	vsock    net.Listener
	resource bool // a boot-specific resource was configured (blocks snapshot load)
	exit     chan struct{}
	exitOnce sync.Once
}

// NewServer returns a server for the instance id.
func NewServer(id string, run Runner, log *slog.Logger) *Server {
	return &Server{
		Log: log, Run: run, exit: make(chan struct{}),
		cfg: Config{ID: id, VCPUs: 1, MemMiB: 128},
	}
}

// Exited is closed when the process should exit (the guest stopped, or a
// snapshot load failed, which ends real Firecracker too).
func (s *Server) Exited() <-chan struct{} { return s.exit }

func (s *Server) quit() { s.exitOnce.Do(func() { close(s.exit) }) }

// Close stops the guest and the vsock listener.
func (s *Server) Close() {
	s.mu.Lock()
	g, ln := s.guest, s.vsock
	s.mu.Unlock()
	if g != nil {
		g.Kill()
	}
	if ln != nil {
		ln.Close()
	}
}

type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func bad(format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

const (
	msgAfterStart  = "The requested operation is not supported after starting the microVM."
	msgBeforeStart = "The requested operation is not supported before starting the microVM."
)

type phase int

const (
	anyPhase phase = iota
	preBoot
	postBoot
)

type route struct {
	phase  phase
	schema schema
	// handle runs with s.mu held; obj is the checked body (nil for GET).
	handle func(s *Server, id string, obj map[string]json.RawMessage) (any, *apiError)
}

// routes maps "METHOD /path" (with {id} for the last segment of
// /drives/ and /network-interfaces/) to its rules.
var routes = map[string]route{
	"GET /": {anyPhase, nil, (*Server).getInstance},
	"GET /version": {anyPhase, nil, func(*Server, string, map[string]json.RawMessage) (any, *apiError) {
		return map[string]string{"firecracker_version": Version}, nil
	}},
	"GET /machine-config":            {anyPhase, nil, (*Server).getMachineConfig},
	"PUT /machine-config":            {preBoot, machineConfigSchema, (*Server).putMachineConfig},
	"PUT /boot-source":               {preBoot, bootSourceSchema, (*Server).putBootSource},
	"PUT /drives/{id}":               {preBoot, driveSchema, (*Server).putDrive},
	"PUT /network-interfaces/{id}":   {preBoot, netSchema, (*Server).putNet},
	"PUT /vsock":                     {preBoot, vsockSchema, (*Server).putVsock},
	"PUT /entropy":                   {preBoot, entropySchema, (*Server).putEntropy},
	"PUT /serial":                    {preBoot, serialSchema, (*Server).putSerial},
	"PUT /logger":                    {preBoot, loggerSchema, (*Server).putLogger},
	"PUT /actions":                   {anyPhase, actionSchema, (*Server).putAction},
	"PATCH /vm":                      {postBoot, vmStateSchema, (*Server).patchVM},
	"PUT /snapshot/create":           {postBoot, snapshotCreateSchema, (*Server).createSnapshot},
	"PUT /snapshot/load":             {preBoot, snapshotLoadSchema, (*Server).loadSnapshot},
	"PATCH /drives/{id}":             {postBoot, schema{"drive_id": {kind: kString, required: true}, "path_on_host": {kind: kString}, "rate_limiter": rateLimiter}, (*Server).notImplemented},
	"PATCH /network-interfaces/{id}": {postBoot, schema{"iface_id": {kind: kString, required: true}, "rx_rate_limiter": rateLimiter, "tx_rate_limiter": rateLimiter}, (*Server).notImplemented},
	"PUT /balloon":                   {preBoot, schema{"amount_mib": {kind: kInt, required: true}, "deflate_on_oom": {kind: kBool, required: true}, "stats_polling_interval_s": {kind: kInt}, "free_page_hinting": {kind: kBool}, "free_page_reporting": {kind: kBool}}, (*Server).notImplemented},
	"PUT /metrics":                   {preBoot, schema{"metrics_path": {kind: kString, required: true}}, (*Server).notImplemented},
	"PUT /mmds/config":               {preBoot, schema{"network_interfaces": {kind: kArray, required: true}, "version": {kind: kString, enum: []string{"V1", "V2"}}, "ipv4_address": {kind: kString}, "imds_compat": {kind: kBool}}, (*Server).notImplemented},
	"GET /balloon": {anyPhase, nil, func(*Server, string, map[string]json.RawMessage) (any, *apiError) {
		return nil, bad("No balloon device configured.")
	}},
	"GET /vm/config": {anyPhase, nil, (*Server).getVMConfig},
}

// ServeHTTP implements http.Handler with Firecracker's request rules.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v, err := s.serve(r)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		s.Log.Debug("refused", "method", r.Method, "path", r.URL.Path, "status", err.status, "fault", err.msg)
		w.WriteHeader(err.status)
		json.NewEncoder(w).Encode(map[string]string{"fault_message": err.msg})
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(r *http.Request) (any, *apiError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		return nil, bad("Cannot read request body: %v", err)
	}
	if len(body) > maxPayload {
		return nil, &apiError{http.StatusBadRequest, fmt.Sprintf("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), maxPayload)}
	}
	path := r.URL.Path
	key, id := r.Method+" "+path, ""
	for _, p := range []string{"/drives/", "/network-interfaces/"} {
		if rest, ok := strings.CutPrefix(path, p); ok && rest != "" && !strings.Contains(rest, "/") {
			key, id = r.Method+" "+p+"{id}", rest
		}
	}
	rt, ok := routes[key]
	if !ok {
		return nil, bad("Invalid request method and/or path: %s %s.", r.Method, path)
	}
	switch {
	case r.Method == http.MethodGet && len(body) > 0:
		return nil, bad("GET request cannot have a body.")
	case r.Method == http.MethodPut && len(body) == 0:
		return nil, bad("Empty PUT request.")
	case r.Method == http.MethodPatch && len(body) == 0:
		return nil, bad("Empty PATCH request.")
	}
	var obj map[string]json.RawMessage
	if rt.schema != nil {
		if obj, err = rt.schema.check(body); err != nil {
			return nil, bad("An error occurred when deserializing the json body of a request: %v.", err)
		}
	}
	if id != "" {
		if !validID(id) {
			return nil, bad("Invalid ID: %q may only contain alphanumeric characters and underscores.", id)
		}
		idField := "drive_id"
		if strings.HasPrefix(key, r.Method+" /network-interfaces/") {
			idField = "iface_id"
		}
		if str(obj, idField) != id {
			return nil, bad("The id from the path does not match the id from the body!")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case rt.phase == preBoot && s.started:
		return nil, bad(msgAfterStart)
	case rt.phase == postBoot && !s.started:
		return nil, bad(msgBeforeStart)
	}
	return rt.handle(s, id, obj)
}

func (s *Server) state() string {
	switch {
	case !s.started:
		return "Not started"
	case s.paused:
		return "Paused"
	}
	return "Running"
}

func (s *Server) getInstance(string, map[string]json.RawMessage) (any, *apiError) {
	return map[string]string{"app_name": "Firecracker", "id": s.cfg.ID, "state": s.state(), "vmm_version": Version}, nil
}

func (s *Server) getMachineConfig(string, map[string]json.RawMessage) (any, *apiError) {
	return map[string]any{"vcpu_count": s.cfg.VCPUs, "mem_size_mib": s.cfg.MemMiB, "smt": false, "track_dirty_pages": false, "huge_pages": "None"}, nil
}

func (s *Server) getVMConfig(string, map[string]json.RawMessage) (any, *apiError) {
	mc, _ := s.getMachineConfig("", nil)
	return map[string]any{"machine-config": mc, "boot-source": map[string]string{"kernel_image_path": s.cfg.Kernel, "boot_args": s.cfg.BootArgs, "initrd_path": s.cfg.Initrd}}, nil
}

// maxVCPUs is Firecracker's vCPU limit.
const maxVCPUs = 32

func (s *Server) putMachineConfig(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	n, mem := num(obj, "vcpu_count"), num(obj, "mem_size_mib")
	if n < 1 || n > maxVCPUs {
		return nil, bad("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	if boolean(obj, "smt") && n > 1 && n%2 != 0 {
		return nil, bad("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	if mem == 0 {
		return nil, bad("The memory size (MiB) is invalid.")
	}
	if str(obj, "huge_pages") == "2M" && mem%2 != 0 {
		return nil, bad("The memory size (MiB) is invalid: it must be a multiple of the huge page size when huge pages are used.")
	}
	s.cfg.VCPUs, s.cfg.MemMiB, s.mcSet, s.resource = int(n), int(mem), true, true
	return nil, nil
}

func (s *Server) putBootSource(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	k := s.resolve(str(obj, "kernel_image_path"))
	if err := readable(k); err != nil {
		return nil, bad("The kernel file cannot be opened: %v", err)
	}
	if err := s.jailed(k); err != nil {
		return nil, bad("The kernel file cannot be opened: %v", err)
	}
	initrd := str(obj, "initrd_path")
	if initrd != "" {
		initrd = s.resolve(initrd)
		if err := s.jailed(initrd); err != nil {
			return nil, bad("The initrd file cannot be opened due to invalid permissions or missing file: %v", err)
		}
		if err := readable(initrd); err != nil {
			return nil, bad("The initrd file cannot be opened due to invalid permissions or missing file: %v", err)
		}
	}
	s.cfg.Kernel, s.cfg.Initrd, s.cfg.BootArgs = k, initrd, str(obj, "boot_args")
	s.bootSet, s.resource = true, true
	return nil, nil
}

func readable(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	return f.Close()
}

func (s *Server) putDrive(id string, obj map[string]json.RawMessage) (any, *apiError) {
	if has(obj, "socket") {
		return nil, bad("stand-in: vhost-user block devices are not emulated")
	}
	if !has(obj, "path_on_host") || !has(obj, "is_read_only") {
		return nil, bad("Unable to create the block device: path_on_host and is_read_only are required for a virtio-block drive.")
	}
	d := Drive{ID: id, Given: str(obj, "path_on_host"), Root: boolean(obj, "is_root_device"), ReadOnly: boolean(obj, "is_read_only")}
	d.Path = s.resolve(d.Given)
	if err := s.jailed(d.Path); err != nil {
		return nil, bad("Unable to create the block device: BackingFile(%v)", err)
	}
	if has(obj, "partuuid") && !d.Root {
		return nil, bad("A partuuid is only valid for the root device.")
	}
	flag := os.O_RDWR
	if d.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(d.Path, flag, 0)
	if err != nil {
		return nil, bad("Unable to create the block device: BackingFile(%v)", err)
	}
	f.Close()
	for i, o := range s.drives {
		if o.Root && d.Root && o.ID != id {
			return nil, bad("A root block device already exists!")
		}
		if o.ID == id {
			s.drives[i] = d
			s.resource = true
			return nil, nil
		}
	}
	s.drives = append(s.drives, d)
	s.resource = true
	return nil, nil
}

func (s *Server) putNet(id string, obj map[string]json.RawMessage) (any, *apiError) {
	n := NIC{ID: id, TAP: str(obj, "host_dev_name"), MAC: str(obj, "guest_mac")}
	if n.TAP == "" || len(n.TAP) > 15 {
		return nil, bad("Open tap device failed: invalid interface name %q.", n.TAP)
	}
	if has(obj, "guest_mac") && !validMAC(n.MAC) {
		return nil, bad("An error occurred when deserializing the json body of a request: invalid MAC address %q.", n.MAC)
	}
	if has(obj, "mtu") {
		if m := num(obj, "mtu"); m < 68 || m > 65535 {
			return nil, bad("Invalid MTU %d: must be between 68 and 65535.", m)
		}
	}
	for i, o := range s.nics {
		if o.ID != id && o.TAP == n.TAP {
			return nil, bad("The host device name %s is already in use.", n.TAP)
		}
		if o.ID == id {
			s.nics[i], s.resource = n, true
			return nil, nil
		}
	}
	s.nics = append(s.nics, n)
	s.resource = true
	return nil, nil
}

func (s *Server) putVsock(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	cid, path := num(obj, "guest_cid"), str(obj, "uds_path")
	if cid < 3 || cid > 1<<32-1 {
		return nil, bad("Invalid guest CID %d: must be at least 3.", cid)
	}
	if s.vsock != nil {
		s.vsock.Close()
		s.vsock = nil
	}
	ln, err := net.Listen("unix", s.resolve(path))
	if err != nil {
		return nil, bad("Cannot create backend for vsock device: UnixBind(%v)", err)
	}
	s.vsock = ln
	s.cfg.VsockCID, s.cfg.VsockPath, s.resource = uint32(cid), path, true
	go s.acceptVsock(ln)
	return nil, nil
}

func (s *Server) putEntropy(string, map[string]json.RawMessage) (any, *apiError) {
	s.cfg.Entropy, s.resource = true, true
	return nil, nil
}

func (s *Server) putSerial(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	if p := str(obj, "serial_out_path"); p != "" {
		s.cfg.SerialOut = s.resolve(p)
		if err := s.jailed(s.cfg.SerialOut); err != nil {
			return nil, bad("Cannot open the serial output file: %v", err)
		}
	}
	return nil, nil
}

func (s *Server) putLogger(string, map[string]json.RawMessage) (any, *apiError) { return nil, nil }

func (s *Server) putAction(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	switch str(obj, "action_type") {
	case "InstanceStart":
		if s.started {
			return nil, bad(msgAfterStart)
		}
		return nil, s.start()
	case "SendCtrlAltDel":
		if !s.started {
			return nil, bad(msgBeforeStart)
		}
		// No i8042 on QEMU microvm: the nearest equivalent of the guest
		// rebooting is the VMM exiting.
		go func() {
			time.Sleep(100 * time.Millisecond)
			s.Close()
		}()
		return nil, nil
	default: // FlushMetrics
		if !s.started {
			return nil, bad(msgBeforeStart)
		}
		return nil, bad("The metrics system is not initialized.")
	}
}

// start boots the guest; called with s.mu held.
func (s *Server) start() *apiError {
	if !s.bootSet {
		return bad("Cannot start microvm that was not configured: the kernel (boot source) is missing.")
	}
	cfg := s.cfg
	for _, d := range s.drives {
		if d.Root {
			cfg.Drives = append(cfg.Drives, d)
		}
	}
	for _, d := range s.drives {
		if !d.Root {
			cfg.Drives = append(cfg.Drives, d)
		}
	}
	cfg.NICs = append([]NIC(nil), s.nics...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := s.Run(ctx, cfg)
	if err != nil {
		return bad("Failed to start microVM: %v", err)
	}
	s.guest, s.started = g, true
	go func() {
		<-g.Done()
		s.Log.Info("guest stopped; exiting")
		s.quit()
	}()
	return nil
}

func (s *Server) patchVM(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if str(obj, "state") == "Paused" {
		if err := s.guest.Pause(ctx); err != nil {
			return nil, bad("Failed to pause the microVM: %v", err)
		}
		s.paused = true
		return nil, nil
	}
	if err := s.guest.Resume(ctx); err != nil {
		return nil, bad("Failed to resume the microVM: %v", err)
	}
	s.paused = false
	return nil, nil
}

func (s *Server) notImplemented(string, map[string]json.RawMessage) (any, *apiError) {
	return nil, bad("stand-in: this endpoint is valid but not emulated")
}

// acceptVsock serves the hybrid vsock socket: each connection sends
// "CONNECT <port>\n" (at most 32 bytes) and gets "OK <host_port>\n" once
// the guest side is connected, then carries guest bytes verbatim.
func (s *Server) acceptVsock(ln net.Listener) {
	next := uint32(1 << 30) // Firecracker's local ports count up from 2^30
	var mu sync.Mutex
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		port := next
		next++
		mu.Unlock()
		go s.bridge(c, port)
	}
}

// resolve maps a path from a request to the host: inside the jail root
// when jailed, relative paths against the working directory.
func (s *Server) resolve(p string) string {
	if s.Root != "" && filepath.IsAbs(p) {
		return filepath.Join(s.Root, p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return abs
}

// jailed checks, under the stand-in jailer, that p lies in the jail and
// that the jail's user may use it, as a chrooted, unprivileged
// Firecracker could.
func (s *Server) jailed(p string) error {
	if s.Root == "" {
		return nil
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(s.Root, real); err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("%s is outside the jail %s", p, s.Root)
	}
	st, err := os.Stat(real)
	if err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != s.Owner && st.Mode().Perm()&0o004 == 0 {
		return fmt.Errorf("%s belongs to uid %d, not the jail's uid %d", p, sys.Uid, s.Owner)
	}
	return nil
}
