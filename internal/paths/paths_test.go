package paths

import "testing"

func TestResolve(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		exists map[string]bool
		want   Dirs
		err    bool
	}{
		{name: "xdg defaults", env: map[string]string{"HOME": "/h"},
			want: Dirs{Cache: "/h/.cache/mvm", Config: "/h/.config/mvm", State: "/h/.local/state/mvm", Share: "/h/.local/share/mvm"}},
		{name: "xdg vars", env: map[string]string{"HOME": "/h", "XDG_CACHE_HOME": "/c", "XDG_CONFIG_HOME": "/cf", "XDG_STATE_HOME": "/s", "XDG_DATA_HOME": "/d"},
			want: Dirs{Cache: "/c/mvm", Config: "/cf/mvm", State: "/s/mvm", Share: "/d/mvm"}},
		{name: "mvm overrides beat xdg", env: map[string]string{"HOME": "/h", "XDG_CACHE_HOME": "/c", "MVM_CACHE_DIR": "/mc", "MVM_STATE_DIR": "/ms/"},
			want: Dirs{Cache: "/mc", Config: "/h/.config/mvm", State: "/ms", Share: "/h/.local/share/mvm"}},
		{name: "relative override rejected", env: map[string]string{"HOME": "/h", "MVM_CACHE_DIR": "rel"}, err: true},
		{name: "relative xdg ignored", env: map[string]string{"HOME": "/h", "XDG_CACHE_HOME": "rel"},
			want: Dirs{Cache: "/h/.cache/mvm", Config: "/h/.config/mvm", State: "/h/.local/state/mvm", Share: "/h/.local/share/mvm"}},
		{name: "legacy used when no xdg dir exists", env: map[string]string{"HOME": "/h", "MVM_STATE_DIR": "/ms"}, exists: map[string]bool{"/h/.mvm": true},
			want: Dirs{Cache: "/h/.mvm/cache", Config: "/h/.mvm", State: "/ms", Share: "/h/.mvm/share", Legacy: true}},
		{name: "legacy ignored when an xdg dir exists", env: map[string]string{"HOME": "/h"}, exists: map[string]bool{"/h/.mvm": true, "/h/.config/mvm": true},
			want: Dirs{Cache: "/h/.cache/mvm", Config: "/h/.config/mvm", State: "/h/.local/state/mvm", Share: "/h/.local/share/mvm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolve(func(k string) string { return tt.env[k] }, func(p string) bool { return tt.exists[p] })
			if tt.err {
				if err == nil {
					t.Fatalf("want error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
