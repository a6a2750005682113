package qemu

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"roost.dev/roost/runtime/microvm"
)

// qcow2Over makes a qcow2 disk in dir over base, with qemu-img.
func qcow2Over(t *testing.T, dir, base string) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not found")
	}
	disk := filepath.Join(dir, "disk.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, b)
	}
	return disk
}

// setBacking rewrites the backing file name in disk's qcow2 header, as a
// QEMU that holds the disk open for writing could.
func setBacking(t *testing.T, disk, name string) {
	t.Helper()
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [20]byte
	f.ReadAt(h[:], 0)
	off := binary.BigEndian.Uint64(h[8:])
	f.WriteAt([]byte(name), int64(off))
	binary.BigEndian.PutUint32(h[16:], uint32(len(name)))
	f.WriteAt(h[16:20], 16)
}

// The saved command line names files by path; QEMU is started with them
// as descriptors the agent opened, and with its seccomp filter.
func TestConfinedArgs(t *testing.T) {
	no := false
	data := t.TempDir()
	d := New(Config{DataDir: data, KVM: &no}, nil)
	images := filepath.Join(data, "images")
	os.MkdirAll(images, 0o700)
	base := filepath.Join(images, "t.ext4")
	os.WriteFile(base, make([]byte, 1<<20), 0o444)
	state := t.TempDir()
	disk := qcow2Over(t, state, base)
	kernel := filepath.Join(data, "vmlinux")
	os.WriteFile(kernel, []byte("k"), 0o644)
	m := &microvm.Machine{State: microvm.State{ID: "sb1", StateDir: state}}
	args := []string{"-name", "roost-sb1", "-kernel", kernel,
		"-drive", "id=root,file=" + disk + ",format=qcow2,if=none,discard=unmap,backing.driver=raw,backing.file.filename=" + base,
		"-qmp", "unix:" + filepath.Join(state, "qmp.sock") + ",server=on,wait=off"}
	out, lf, err := d.vmm.confinedArgs(m, args, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.close()
	want := []string{"-add-fd", "fd=5,set=2", "-add-fd", "fd=6,set=2", "-add-fd", "fd=7,set=3",
		"-sandbox", sandboxPolicy, "-name", "roost-sb1", "-kernel", "/proc/self/fd/4",
		"-drive", "id=root,file=/dev/fdset/2,format=qcow2,if=none,discard=unmap,backing.driver=raw,backing.file.filename=/dev/fdset/3",
		"-chardev", "socket,id=qmp,fd=8,server=on,wait=off", "-mon", "chardev=qmp,mode=control"}
	if !slices.Equal(out, want) {
		t.Errorf("confined args\n%q\nwant\n%q", out, want)
	}
	for i, name := range []string{kernel, disk, disk, base} {
		if got, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(lf.files[i].Fd()))); got != name {
			t.Errorf("descriptor %d is %s, want %s", 4+i, got, name)
		}
	}
	if st, err := os.Stat(filepath.Join(state, "qmp.sock")); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("qmp socket: %v, %v", st, err)
	}
}

// A guest that took over its QEMU rewrites its disk's qcow2 header to
// name a host file (/etc/shadow) as the backing image, hoping the agent,
// as root, opens it for the next QEMU (after a hibernation): the agent
// opens the backing image the saved command line names, never the
// header's; and for a command line of an older agent, which names none,
// it takes the header's only when it is one of the driver's template
// images. The sandbox's own disk still opens.
func TestAttackDiskHeaderNamesHostFile(t *testing.T) {
	no := false
	data := t.TempDir()
	d := New(Config{DataDir: data, KVM: &no}, nil)
	images := filepath.Join(data, "images")
	os.MkdirAll(images, 0o700)
	base := filepath.Join(images, "t.ext4")
	os.WriteFile(base, make([]byte, 1<<20), 0o444)
	state := t.TempDir()
	disk := qcow2Over(t, state, base)
	setBacking(t, disk, "/etc/shadow")
	m := &microvm.Machine{State: microvm.State{ID: "sb1", StateDir: state}}
	drive := "id=root,file=" + disk + ",format=qcow2,if=none,discard=unmap"

	out, lf, err := d.vmm.confinedArgs(m, []string{"-drive", drive + ",backing.driver=raw,backing.file.filename=" + base}, 3)
	if err != nil {
		t.Fatalf("the sandbox's disk no longer opens: %v", err)
	}
	for _, f := range lf.files {
		if got, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))); got == "/etc/shadow" {
			t.Errorf("the agent opened the header's backing file for qemu: %q", out)
		}
	}
	lf.close()

	if _, _, err := d.vmm.confinedArgs(m, []string{"-drive", drive}, 3); err == nil || !strings.Contains(err.Error(), "not a template image") {
		t.Errorf("an older agent's command line with a tampered header: %v, want refused", err)
	}
	setBacking(t, disk, base)
	out, lf, err = d.vmm.confinedArgs(m, []string{"-drive", drive}, 3)
	if err != nil {
		t.Fatalf("an older agent's command line: %v", err)
	}
	lf.close()
	if !strings.Contains(strings.Join(out, " "), "backing.file.filename=/dev/fdset/3") {
		t.Errorf("older command line not given its template image: %q", out)
	}
}
