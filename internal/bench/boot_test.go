package bench

import (
	"slices"
	"testing"
)

func TestRawArgv(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
		err  bool
	}{
		{
			name: "console to a file, descriptors to null",
			in: []string{"qemu", "-chardev", "socket,id=console,fd=3,server=on", "-chardev", "socket,id=agent,fd=4",
				"-chardev", "socket,id=qmp,path=/run/q.sock", "-m", "128"},
			want: []string{"qemu", "-chardev", "file,id=console,path=/tmp/s.log", "-chardev", "null,id=agent",
				"-chardev", "socket,id=qmp,path=/run/q.sock", "-m", "128"},
		},
		{
			name: "commas in the path are escaped",
			in:   []string{"qemu", "-chardev", "socket,fd=3,id=console"},
			want: []string{"qemu", "-chardev", "file,id=console,path=/tmp/a,,b.log"},
		},
		{name: "no console", in: []string{"qemu", "-chardev", "socket,id=agent,fd=4"}, err: true},
		{name: "dangling -chardev", in: []string{"qemu", "-chardev"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serial := "/tmp/s.log"
			if tt.name == "commas in the path are escaped" {
				serial = "/tmp/a,b.log"
			}
			in := slices.Clone(tt.in)
			got, err := rawArgv(tt.in, serial)
			if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
				t.Fatalf("rawArgv = %q, %v; want %q", got, err, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("input argv modified: %q", tt.in)
			}
		})
	}
}
