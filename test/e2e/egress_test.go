package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestEgress: a network's egress policy holds for names and addresses, over
// TCP, UDP and ICMP, with no DNS bypass, on every boot path, and a change
// applies to running VMs at once.
func TestEgress(t *testing.T) {
	l := newNetLab(t)
	l.must(t, time.Minute, "network", "create", "pol", "--egress", "registries")
	l.must(t, bootTimeout, "up", "--backend", "qemu", "--name", "p1", "--network", "pol")
	l.must(t, bootTimeout, "up", "--backend", "qemu", "--name", "p2", "--network", "pol")

	get := func(vm, host string) result {
		return l.sh(t, vm, `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 `+host+` 80`)
	}
	reaches := func(r result) bool { return r.code == 0 && strings.Contains(r.stdout, labWebBody) }
	resolves := func(vm, name string) bool {
		// busybox nslookup exits 0 when the AAAA half answers and the A half
		// was lost; ask again before calling a name unresolvable.
		for i := 0; i < 3; i++ {
			r := l.nslookup(t, vm, name)
			if r.code == 0 && strings.Contains(r.stdout, labNames[name+"."]) {
				return true
			}
			if strings.Contains(r.stdout+r.stderr, "NXDOMAIN") {
				return false
			}
		}
		return false
	}
	// udpEcho: does a datagram from vm reach host's UDP service? (busybox
	// has no UDP nc; its tftp client sends one to any port, and the fake
	// internet counts what arrives.)
	udpEcho := func(vm, host string) bool {
		ip := host
		if a, ok := labNames[host+"."]; ok {
			ip = a
		}
		before := l.udpSeen[ip].Load()
		l.sh(t, vm, "timeout 2 tftp -g -r probe -l /dev/null "+host+" 7")
		return l.udpSeen[ip].Load() > before
	}
	icmp := func(vm, host string) bool { return l.sh(t, vm, "ping -c1 -W2 "+host).code == 0 }
	debIP, ghIP, exIP := labNames["deb.debian.org."], labNames["github.com."], labNames["example.com."]

	// checkRegistries is the registries preset's contract.
	checkRegistries := func(t *testing.T, vm string) {
		t.Helper()
		if !resolves(vm, "deb.debian.org") {
			t.Fatalf("%s cannot resolve an allowed registry:\n%s\n%s", vm, l.sh(t, vm, "nslookup deb.debian.org"), l.firewall(t))
		}
		if r := get(vm, "deb.debian.org"); !reaches(r) {
			t.Fatalf("%s cannot reach an allowed registry by name:\n%s\n%s", vm, r, l.firewall(t))
		}
		if !udpEcho(vm, "deb.debian.org") {
			t.Fatalf("%s: UDP to an allowed registry fails:\n%s", vm, l.sh(t, vm, "timeout 2 tftp -g -r probe -l /dev/null deb.debian.org 7; echo rc=$?"))
		}
		if !icmp(vm, "deb.debian.org") {
			t.Fatalf("%s: ICMP to an allowed registry fails:\n%s", vm, l.sh(t, vm, "ping -c1 -W2 deb.debian.org"))
		}
		if resolves(vm, "github.com") {
			t.Fatalf("%s resolved a name the preset does not allow", vm)
		}
		if r := l.sh(t, vm, "nslookup github.com"); !strings.Contains(r.stdout+r.stderr, "NXDOMAIN") {
			t.Fatalf("%s: a name not allowed is not NXDOMAIN:\n%s", vm, r)
		}
		if reaches(get(vm, ghIP)) || udpEcho(vm, ghIP) || icmp(vm, ghIP) {
			t.Fatalf("%s reached a denied host by address", vm)
		}
		// No DNS but ours: a foreign server is unreachable on 53.
		if r := l.sh(t, vm, "nslookup github.com "+labDNS1); strings.Contains(r.stdout, ghIP) {
			t.Fatalf("%s resolved through a foreign DNS server:\n%s", vm, r)
		}
	}

	t.Run("registries preset", func(t *testing.T) { checkRegistries(t, "p1") })

	t.Run("VMs of the network still reach each other", func(t *testing.T) {
		if r := l.sh(t, "p1", "ping -c1 -W5 p2"); r.code != 0 {
			t.Fatalf("p1 cannot reach p2:\n%s", r)
		}
	})

	t.Run("inspect shows the policy and drop counters", func(t *testing.T) {
		var v struct {
			Policy struct {
				Preset  string            `json:"preset"`
				Names   []string          `json:"names"`
				Dropped map[string]uint64 `json:"dropped"`
				Drops   []struct {
					VM          string `json:"vm"`
					Destination string `json:"destination"`
				} `json:"drops"`
			} `json:"policy"`
		}
		r := l.must(t, time.Minute, "network", "inspect", "pol", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatal(err)
		}
		if v.Policy.Preset != "registries" || !strings.Contains(strings.Join(v.Policy.Names, " "), "deb.debian.org") || v.Policy.Dropped["p1"] == 0 {
			t.Fatalf("inspect policy: %+v\n%s", v.Policy, r)
		}
		// The denied host p1 tried by address is listed once, with the VM.
		n := 0
		for _, d := range v.Policy.Drops {
			if d.VM == "p1" && d.Destination == ghIP {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("drops should list p1 -> %s once: %+v", ghIP, v.Policy.Drops)
		}
		if r := l.must(t, time.Minute, "-v", "network", "inspect", "pol"); !strings.Contains(r.stdout, ghIP) {
			t.Fatalf("inspect -v does not list the dropped destination:\n%s", r)
		}
		// The network's DNS server logged the first drop and the refused name.
		if logs := l.dnsLog(t, "pol"); !strings.Contains(logs, "egress: dropped") || !strings.Contains(logs, ghIP) || !strings.Contains(logs, "github.com") {
			t.Fatalf("the DNS server's log lacks the first drop or refused name:\n%s", logs)
		}
	})

	t.Run("the policy holds after down and start", func(t *testing.T) {
		l.must(t, 2*time.Minute, "down", "p1")
		l.must(t, bootTimeout, "start", "p1")
		checkRegistries(t, "p1")
	})

	t.Run("the policy holds for a clone", func(t *testing.T) {
		l.must(t, 2*time.Minute, "snapshot", "create", "p2", "snap-p2")
		l.must(t, bootTimeout, "up", "--from-snapshot", "snap-p2", "--name", "p3")
		checkRegistries(t, "p3")
		l.must(t, time.Minute, "rm", "-f", "p3")
		l.must(t, time.Minute, "snapshot", "rm", "snap-p2")
	})

	t.Run("the policy holds for a template's VMs", func(t *testing.T) {
		l.must(t, time.Minute, "template", "create", "tp", "--from", "minimal", "--memory", "128M", "--network", "pol")
		l.must(t, 10*time.Minute, "template", "build", "tp", "--snapshot")
		l.must(t, bootTimeout, "up", "--template", "tp", "--name", "p4")
		checkRegistries(t, "p4")
		l.must(t, time.Minute, "rm", "-f", "p4")
		l.must(t, time.Minute, "template", "delete", "tp")
	})

	t.Run("the dev preset adds the source forges", func(t *testing.T) {
		l.must(t, time.Minute, "network", "update", "pol", "--egress", "dev")
		if !resolves("p1", "github.com") || !reaches(get("p1", "github.com")) {
			t.Fatalf("dev preset: github.com unreachable\n%s", l.firewall(t))
		}
		if !reaches(get("p1", "deb.debian.org")) {
			t.Fatal("dev preset lost the registries")
		}
		if resolves("p1", "example.com") || reaches(get("p1", exIP)) {
			t.Fatal("dev preset reached a host it does not name")
		}
	})

	t.Run("tightening applies to running VMs at once", func(t *testing.T) {
		if !reaches(get("p1", "deb.debian.org")) {
			t.Fatal("precondition: p1 reaches deb.debian.org")
		}
		l.must(t, time.Minute, "network", "update", "pol", "--egress", "none")
		if reaches(get("p1", debIP)) || udpEcho("p1", debIP) || icmp("p1", debIP) {
			t.Fatal("a new connection to a formerly allowed address got through after tightening")
		}
		if resolves("p1", "deb.debian.org") {
			t.Fatal("none preset still resolves outside names")
		}
		if r := l.sh(t, "p1", "ping -c1 -W5 p2"); r.code != 0 {
			t.Fatalf("none preset cut the network's own VMs:\n%s", r)
		}
	})

	t.Run("an allow-list reaches exactly what it names", func(t *testing.T) {
		l.must(t, time.Minute, "network", "update", "pol", "--egress", "none", "--allow", "api.example.com", "--allow", exIP+":80")
		if !resolves("p1", "api.example.com") || !reaches(get("p1", "api.example.com")) {
			t.Fatal("allowed name unreachable")
		}
		if !reaches(get("p1", exIP)) {
			t.Fatal("allowed CIDR:PORT unreachable")
		}
		if icmp("p1", exIP) || udpEcho("p1", exIP) {
			t.Fatal("CIDR:PORT allowed more than its port")
		}
		if resolves("p1", "example.com") || resolves("p1", "deb.debian.org") {
			t.Fatal("names outside the list resolve")
		}
		if reaches(get("p1", ghIP)) {
			t.Fatal("an address outside the list was reached")
		}
	})

	t.Run("deny wins over open", func(t *testing.T) {
		l.must(t, time.Minute, "network", "update", "pol", "--egress", "open", "--allow", "", "--deny", ghIP)
		if !reaches(get("p1", "deb.debian.org")) || !reaches(get("p1", exIP)) {
			t.Fatal("open policy blocks")
		}
		if reaches(get("p1", "github.com")) || icmp("p1", ghIP) {
			t.Fatal("denied address reached under open")
		}
	})

	t.Run("user mode refuses a policy it cannot enforce", func(t *testing.T) {
		r := l.run(t, time.Minute, "network", "create", "upol", "--mode", "user", "--egress", "none")
		if r.code == 0 || !strings.Contains(r.stderr, "cannot enforce") {
			t.Fatalf("user-mode network with a policy:\n%s", r)
		}
	})
}
