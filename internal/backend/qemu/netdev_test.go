package qemu

import (
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

func TestNetdev(t *testing.T) {
	user := &backend.UserNet{Subnet: "10.0.2.0/24", Gateway: "10.0.2.2", DNS: "10.0.2.3", GuestIP: "10.0.2.15",
		Forwards: []backend.Publish{{Proto: "tcp", HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80}, {Proto: "udp", HostIP: "127.0.0.1", HostPort: 5353, GuestPort: 53}}}
	tests := []struct {
		name    string
		nic     backend.NIC
		kvm     bool
		fd      int
		want    string
		wantErr string
	}{
		{"tap under tcg", backend.NIC{ID: "net0", MAC: "02:6d:00:00:00:01", TAP: "mvmtabc"}, false, 0, "tap,id=net0,ifname=mvmtabc,script=no,downscript=no,vhost=off", ""},
		{"tap under kvm", backend.NIC{ID: "net0", MAC: "02:6d:00:00:00:01", TAP: "mvmtabc"}, true, 0, "vhost=on", ""},
		{"slirp", backend.NIC{ID: "net0", MAC: "02:6d:00:00:00:01", User: user}, false, 0,
			"user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53", ""},
		{"passt", backend.NIC{ID: "net0", MAC: "02:6d:00:00:00:01", User: user}, false, 5, "stream,id=net0,server=off,addr.type=fd,addr.str=5", ""},
		{"bad mac", backend.NIC{ID: "net0", MAC: "zz", TAP: "t"}, false, 0, "", "invalid MAC"},
		{"bad id", backend.NIC{ID: "a,b", MAC: "02:6d:00:00:00:01", TAP: "t"}, false, 0, "", "invalid NIC id"},
		{"nothing", backend.NIC{ID: "net0", MAC: "02:6d:00:00:00:01"}, false, 0, "", "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := netdev(tt.nic, tt.kvm, tt.fd)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// passt's descriptor comes after the listening sockets, and its command
// line carries the addresses and forwards.
func TestPasstLaunch(t *testing.T) {
	user := &backend.UserNet{Subnet: "10.0.2.0/24", Gateway: "10.0.2.2", DNS: "10.0.2.3", GuestIP: "10.0.2.15",
		Forwards: []backend.Publish{{Proto: "tcp", HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80}}}
	nic := backend.NIC{ID: "net0", MAC: "02:6d:00:00:00:01", User: user}
	l := launch{Transport: "virtio-serial", SerialSock: "/d/s", SerialLog: "/d/log", ConsoleSock: "/d/c", NICs: []backend.NIC{nic}, Passt: "/usr/bin/passt", Dir: "/d"}
	if fd, want := l.passtFD(nic), supervisor.FirstListenFD+2; fd != want {
		t.Fatalf("passt fd %d, want %d (after the console and agent sockets)", fd, want)
	}
	h, err := passtHelper(l.Passt, "/d", nic)
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Join(h.Argv, " ")
	for _, want := range []string{"--fd 3", "--address 10.0.2.15", "--gateway 10.0.2.2", "--dns-forward 10.0.2.3", "--tcp-ports 127.0.0.1/8080:80", "--udp-ports none", "--ipv4-only"} {
		if !strings.Contains(argv, want) {
			t.Errorf("passt argv %q lacks %q", argv, want)
		}
	}
	l.Passt = ""
	if l.passtFD(nic) != 0 {
		t.Fatal("no passt, yet a passt descriptor")
	}
}
