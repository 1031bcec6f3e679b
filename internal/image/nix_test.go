package image

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFlakeNames(t *testing.T) {
	cases := map[string]string{
		".#vm":                                   "vm",
		"/src/my-app#packages.x86_64-linux.web":  "web",
		"/src/My_App":                            "my-app",
		"github:owner/repo#default":              "repo",
		"github:owner/repo":                      "repo",
		"git+https://example.com/x/y.git?ref=v1": "y-git",
		"#":                                      "flake",
	}
	for in, want := range cases {
		if got := flakeName(in); got != want {
			t.Errorf("flakeName(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "-x", "a b", "a\nb", "x;rm"} {
		if _, err := ResolveFlake(bad); err == nil {
			t.Errorf("ResolveFlake(%q): no error", bad)
		}
	}
	r, err := Resolve("flake:.#vm")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if r.Name != "vm" || r.Rootfs.Source != RootfsNix || r.Kernel.Source != KernelNix || r.Rootfs.Flake != wd+"#vm" {
		t.Errorf("recipe %+v", r)
	}
	if got := FlakeImageRef("./x#y"); got != "flake:"+filepath.Join(wd, "x")+"#y" {
		t.Errorf("FlakeImageRef = %q", got)
	}
	// Recipes can name flakes too; the kernel may come from the host.
	if _, err := ParseRecipe("n.toml", []byte("name = \"n\"\n[rootfs]\nsource = \"nix\"\nflake = \".#vm\"\n"), t.TempDir()); err != nil {
		t.Errorf("nix recipe: %v", err)
	}
	for _, bad := range []string{
		"name = \"n\"\n[kernel]\nsource = \"nix\"\n",                                 // nix kernel without nix rootfs
		"name = \"n\"\n[rootfs]\nsource = \"nix\"\n",                                 // no flake
		"name = \"n\"\n[rootfs]\nsource = \"debian\"\nflake = \".#x\"\n",             // flake with debian
		"name = \"n\"\n[rootfs]\nsource = \"nix\"\nflake = \".#x\"\nimage = \"a\"\n", // image with nix
	} {
		if _, err := ParseRecipe("n.toml", []byte(bad), t.TempDir()); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

func TestFlakeWithoutNix(t *testing.T) {
	agent := needBuildTools(t)
	t.Setenv("PATH", t.TempDir())
	r, err := ResolveFlake(".#vm")
	if err != nil {
		t.Fatal(err)
	}
	_, err = EnsureRecipe(context.Background(), r, BuildOptions{CacheDir: t.TempDir(), AgentPath: agent})
	if !errors.Is(err, ErrNixMissing) || !strings.Contains(err.Error(), "https://nixos.org/download") {
		t.Fatalf("error %v; want ErrNixMissing with the install URL", err)
	}
}

// fakeNix puts a `nix` on PATH that records its argv and "builds" an output
// directory holding the given files.
func fakeNix(t *testing.T, files map[string]string) (argsFile, outDir string) {
	t.Helper()
	bin := t.TempDir()
	outDir = filepath.Join(t.TempDir(), "nix-store-abc-vm")
	argsFile = filepath.Join(t.TempDir(), "args")
	var sb strings.Builder
	sb.WriteString("#!/bin/sh\nprintf '%s\\n' \"$@\" > " + argsFile + "\necho \"cwd=$(pwd)\" >> " + argsFile + "\nmkdir -p " + outDir + "\n")
	for name, src := range files {
		sb.WriteString("cp " + src + " " + filepath.Join(outDir, name) + "\n")
	}
	sb.WriteString("echo " + outDir + "\n")
	if err := os.WriteFile(filepath.Join(bin, "nix"), []byte(sb.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return argsFile, outDir
}

func TestFlakeBuildWithFakeNix(t *testing.T) {
	agent := needBuildTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := t.TempDir()
	kernel := filepath.Join(src, "kernel")
	if err := os.WriteFile(kernel, []byte("not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	// rootfs.tar
	rootTar := filepath.Join(src, "rootfs.tar")
	if err := os.WriteFile(rootTar, layerTar(t, dir("etc/"), file("etc/os-release", "ID=nixos\n"),
		dir("sbin/"), tent{name: "home/", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 100}), 0o644); err != nil {
		t.Fatal(err)
	}
	argsFile, out := fakeNix(t, map[string]string{"vmlinux": kernel, "rootfs.tar": rootTar})
	flakeDir := t.TempDir()
	t.Chdir(flakeDir)
	r, err := ResolveFlake(".#vm")
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "images")
	a, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(argsFile)
	for _, want := range []string{"build\n", "--print-out-paths\n", flakeDir + "#vm\n", "nix-command flakes\n", "cwd=" + flakeDir} {
		if !strings.Contains(string(args), want) {
			t.Errorf("nix argv lacks %q:\n%s", want, args)
		}
	}
	if a.Name != "vm" {
		t.Errorf("name %q", a.Name)
	}
	if k, _ := os.ReadFile(a.Kernel); string(k) != "not really a kernel" {
		t.Errorf("kernel not taken from the output: %q", k)
	}
	fsck(t, a.Rootfs)
	if got := debugfs(t, a.Rootfs, "cat /etc/os-release"); got != "ID=nixos\n" {
		t.Errorf("os-release %q", got)
	}
	if s := debugfs(t, a.Rootfs, "stat /sbin/mvm-agent"); !strings.Contains(s, "Type: regular") {
		t.Errorf("agent missing:\n%s", s)
	}
	if s := debugfs(t, a.Rootfs, "stat /home"); !strings.Contains(s, "User:  1000") {
		t.Errorf("/home owner:\n%s", s)
	}
	// Same output: cache hit. Changed output: rebuild.
	b, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil || b.Digest != a.Digest {
		t.Fatalf("rebuild of the same output: %v %v", b, err)
	}
	os.WriteFile(kernel, []byte("another kernel"), 0o644)
	c, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil || c.Digest == a.Digest {
		t.Fatalf("changed output kept the digest: %v", err)
	}

	// An ext4 root filesystem is unpacked and re-made with the agent.
	mkfs, _ := lookTool("mkfs.ext4", "e2fsprogs")
	tree := filepath.Join(src, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "from-ext4"), []byte("yes\n"), 0o644)
	ext4 := filepath.Join(src, "rootfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-d", tree, ext4, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	os.RemoveAll(out)
	fakeNix(t, map[string]string{"bzImage": kernel, "rootfs.ext4": ext4})
	d, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	fsck(t, d.Rootfs)
	if got := debugfs(t, d.Rootfs, "cat /etc/from-ext4"); got != "yes\n" {
		t.Errorf("from-ext4 %q", got)
	}

	// An output without a root filesystem says what it has.
	os.RemoveAll(out)
	fakeNix(t, map[string]string{"vmlinux": kernel})
	if _, err := EnsureRecipe(ctx, r, BuildOptions{CacheDir: cache, AgentPath: agent}); err == nil ||
		!strings.Contains(err.Error(), "no root filesystem") || !strings.Contains(err.Error(), "vmlinux") {
		t.Errorf("missing rootfs: %v", err)
	}
}
