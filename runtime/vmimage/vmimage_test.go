package vmimage

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCpioReadableByCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio binary to check against")
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	c.dir("modules")
	c.file("init", 0o755, []byte("abc"))
	c.file("modules/order", 0o644, []byte("x.ko\n"))
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "modules/order") || !strings.Contains(string(out), "init") {
		t.Fatalf("listing %q", out)
	}
}

func TestPrepareHostKernel(t *testing.T) {
	hk, err := FindHostKernel("/boot", "/lib/modules")
	if err != nil {
		t.Skip(err)
	}
	init, err := os.Executable() // any file stands in for the init here
	if err != nil {
		t.Fatal(err)
	}
	k, err := PrepareKernel(context.Background(), hk, init, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(k.Vmlinux)
	if err != nil || !bytes.HasPrefix(b, []byte("\x7fELF")) {
		t.Fatalf("vmlinux is not an ELF file: %v", err)
	}
	list, err := exec.Command("sh", "-c", "cpio -t < "+k.Initramfs).Output()
	if err == nil {
		for _, m := range []string{"virtio_blk.ko", "virtio_net.ko", "ext4.ko", "jbd2.ko", "virtio_mmio.ko", "virtio.ko"} {
			if !strings.Contains(string(list), filepath.Join("modules", m)) {
				t.Errorf("initramfs lacks %s: %s", m, list)
			}
		}
	}
}

func TestStripSignature(t *testing.T) {
	body := []byte("\x7fELF module body")
	sig := bytes.Repeat([]byte{0xAB}, 300)
	info := make([]byte, 12)
	info[8], info[9], info[10], info[11] = 0, 0, 1, 44 // 300, big-endian
	signed := append(append(append(append([]byte{}, body...), sig...), info...), sigMagic...)
	if got := stripSignature(signed); !bytes.Equal(got, body) {
		t.Errorf("stripped to %q", got)
	}
	if got := stripSignature(body); !bytes.Equal(got, body) {
		t.Errorf("unsigned module changed: %q", got)
	}
	bogus := append(append([]byte{}, info...), sigMagic...)
	bogus[11] = 0xff
	if got := stripSignature(bogus); !bytes.Equal(got, bogus) {
		t.Error("a length past the start was trusted")
	}
}
