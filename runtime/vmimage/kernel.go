package vmimage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// initramfsFormat names the initramfs layout; bump it when BuildInitramfs
// changes what it writes, so cached ones are rebuilt.
const initramfsFormat = "initramfs-v2"

// GuestModules are the modules a guest needs to reach its root disk and
// network on a virtio-mmio machine, when its kernel has them as modules;
// their dependencies come from modules.dep. Optional ones may fail to
// load (crc32c-intel needs SSE4.2) without harm.
var GuestModules = []string{"virtio_mmio", "virtio_blk", "virtio_net", "crc32c_generic", "crc32c-intel", "ext4"}

// Kernel is a guest kernel prepared for a direct boot.
type Kernel struct {
	Version   string
	Vmlinux   string // uncompressed ELF with a PVH entry
	Initramfs string // newc cpio: the guest init and the modules
}

// HostKernel describes a distribution kernel installed on the host.
type HostKernel struct {
	Version string
	Image   string // /boot/vmlinuz-VERSION (bzImage)
	Modules string // /lib/modules/VERSION
	Config  string // /boot/config-VERSION; may be missing
}

// FindHostKernel returns the newest kernel with both an image in bootDir
// and modules under modulesDir ("/boot" and "/lib/modules" normally).
func FindHostKernel(bootDir, modulesDir string) (HostKernel, error) {
	images, _ := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join(modulesDir, v)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
			return HostKernel{Version: v, Image: img, Modules: mods, Config: filepath.Join(bootDir, "config-"+v)}, nil
		}
	}
	return HostKernel{}, fmt.Errorf("no kernel with modules in %s and %s (install linux-image-amd64)", bootDir, modulesDir)
}

// InstallHostKernel installs Debian's kernel package with apt.
func InstallHostKernel(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", "linux-image-amd64")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install linux-image-amd64: %w: %s", err, lastLines(b, 5))
	}
	return nil
}

// PrepareKernel extracts hk's vmlinux and builds an initramfs around
// init, caching both under dir; a changed init gets a new initramfs.
func PrepareKernel(ctx context.Context, hk HostKernel, init, dir string) (Kernel, error) {
	kdir := filepath.Join(dir, hk.Version)
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return Kernel{}, err
	}
	k := Kernel{Version: hk.Version, Vmlinux: filepath.Join(kdir, "vmlinux")}
	if _, err := os.Stat(k.Vmlinux); err != nil {
		tmp := k.Vmlinux + ".tmp"
		if err := ExtractVmlinux(ctx, hk.Image, tmp); err != nil {
			os.Remove(tmp)
			return Kernel{}, err
		}
		if err := os.Rename(tmp, k.Vmlinux); err != nil {
			return Kernel{}, err
		}
	}
	sum, err := fileHash(init)
	if err != nil {
		return Kernel{}, fmt.Errorf("guest init: %w", err)
	}
	// The name changes with the init and with how the initramfs is built.
	k.Initramfs = filepath.Join(kdir, initramfsFormat+"-"+sum[:16]+".cpio")
	if _, err := os.Stat(k.Initramfs); err != nil {
		tmp := k.Initramfs + ".tmp"
		if err := BuildInitramfs(hk.Modules, init, GuestModules, !sigForced(hk.Config), tmp); err != nil {
			os.Remove(tmp)
			return Kernel{}, err
		}
		if err := os.Rename(tmp, k.Initramfs); err != nil {
			return Kernel{}, err
		}
	}
	return k, nil
}

// sigForced reports whether a kernel refuses unsigned modules (or whether
// that cannot be told, without its config).
func sigForced(config string) bool {
	b, err := os.ReadFile(config)
	if err != nil {
		return true
	}
	return bytes.Contains(b, []byte("\nCONFIG_MODULE_SIG_FORCE=y"))
}

// sigMagic ends a module with an appended signature: the signature, then
// a 12-byte struct module_signature whose last 4 bytes are the
// signature's length (big-endian), then this marker.
const sigMagic = "~Module signature appended~\n"

// stripSignature returns a module without its appended signature, or as
// it is when it has none.
func stripSignature(ko []byte) []byte {
	if !bytes.HasSuffix(ko, []byte(sigMagic)) || len(ko) < len(sigMagic)+12 {
		return ko
	}
	end := len(ko) - len(sigMagic)
	n := int(binary.BigEndian.Uint32(ko[end-4 : end]))
	if n > end-12 {
		return ko
	}
	return ko[:end-12-n]
}

func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compressions are the payload formats a bzImage may carry, by magic.
var compressions = []struct {
	name  string
	magic []byte
	tool  []string // decompressor reading stdin; nil means Go's gzip
}{
	{"gzip", []byte{0x1f, 0x8b, 0x08}, nil},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, []string{"xz", "-dc", "--single-stream"}},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}, []string{"zstd", "-dc"}},
	{"lzma", []byte{0x5d, 0x00, 0x00, 0x00}, []string{"xz", "-dc", "--format=lzma"}},
}

// ExtractVmlinux finds the compressed kernel inside a bzImage and writes
// the uncompressed ELF to out: at each offset where a known compression's
// magic appears it tries to decompress, and keeps the first result that
// is an ELF file (the magic bytes may also occur by chance).
func ExtractVmlinux(ctx context.Context, bzImage, out string) error {
	img, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	for _, c := range compressions {
		for off := 0; ; {
			i := bytes.Index(img[off:], c.magic)
			if i < 0 {
				break
			}
			at := off + i
			off = at + 1
			elf, err := decompress(ctx, c.tool, img[at:])
			if err != nil || !bytes.HasPrefix(elf, []byte("\x7fELF")) {
				continue
			}
			return os.WriteFile(out, elf, 0o644)
		}
	}
	return fmt.Errorf("%s: no compressed ELF kernel found", bzImage)
}

func decompress(ctx context.Context, tool []string, data []byte) ([]byte, error) {
	if tool == nil {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		return io.ReadAll(zr)
	}
	cmd := exec.CommandContext(ctx, tool[0], tool[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	var outb bytes.Buffer
	cmd.Stdout = &outb
	err := cmd.Run()
	// Trailing bytes after the stream make some tools complain; what was
	// decompressed before that is the kernel.
	if outb.Len() > 0 {
		return outb.Bytes(), nil
	}
	if err == nil {
		err = errors.New("empty output")
	}
	return nil, err
}

// BuildInitramfs writes a newc cpio to out with init as /init and the
// wanted modules (and what they depend on, per modules.dep) under
// /modules, in load order. Modules the kernel has built in are skipped.
// With strip, module signatures are removed: checking them costs a
// guest under emulation a quarter of a second of its boot, and a kernel
// that does not force signatures loads the modules anyway (it notes a
// taint once).
func BuildInitramfs(modulesDir, init string, want []string, strip bool, out string) error {
	deps, err := readModulesDep(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		return err
	}
	byName := map[string]string{} // module name → path relative to modulesDir
	for p := range deps {
		byName[moduleName(p)] = p
	}
	var order []string
	seen := map[string]bool{}
	var visit func(p string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		// modules.dep lists a module's dependencies so that loading them
		// from last to first satisfies each before its users.
		ds := deps[p]
		for i := len(ds) - 1; i >= 0; i-- {
			visit(ds[i])
		}
		order = append(order, p)
	}
	for _, w := range want {
		p, ok := byName[strings.ReplaceAll(w, "-", "_")]
		if !ok {
			continue // built in, or not in this kernel at all
		}
		visit(p)
	}

	initBin, err := os.ReadFile(init)
	if err != nil {
		return fmt.Errorf("guest init: %w", err)
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	c := &cpioWriter{w: bw}
	for _, d := range []string{"dev", "proc", "sys", "newroot", "modules"} {
		c.dir(d)
	}
	c.file("init", 0o755, initBin)
	var list strings.Builder
	for _, p := range order {
		b, err := os.ReadFile(filepath.Join(modulesDir, p))
		if err != nil {
			f.Close()
			return fmt.Errorf("module %s: %w", p, err)
		}
		if strings.HasSuffix(p, ".xz") || strings.HasSuffix(p, ".zst") || strings.HasSuffix(p, ".gz") {
			f.Close()
			return fmt.Errorf("module %s is compressed; only uncompressed modules are supported", p)
		}
		if strip {
			b = stripSignature(b)
		}
		name := filepath.Base(p)
		c.file("modules/"+name, 0o644, b)
		list.WriteString(name + "\n")
	}
	c.file("modules/order", 0o644, []byte(list.String()))
	if err := c.close(); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readModulesDep(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, nil
}

// moduleName is the kernel's name for a module file: base name without
// the .ko (and compression) suffix, dashes as underscores.
func moduleName(p string) string {
	n := filepath.Base(p)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
