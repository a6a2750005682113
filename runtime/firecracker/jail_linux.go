package firecracker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime/microvm"
)

// Firecracker runs as its jailer runs it: chrooted into a directory that
// holds only its sandbox's files, as the sandbox's VMM uid and gid
// (microvm.Machine.Credential), in the VMM's cgroup (microvm), in a new
// pid and mount namespace, inside the sandbox's network namespace. When
// the jailer binary is next to firecracker (or on $PATH), it does these
// steps; else the launcher does them itself (the kernel does them in the
// fork that starts Firecracker, from its SysProcAttr).
//
// The jail's root is StateDir/firecracker/<id>/root, where the jailer
// puts it (--chroot-base-dir StateDir, --id <id>); StateDir/jail links to
// it. It holds what Firecracker opens by path, named as Firecracker sees
// them from inside:
//
//	/firecracker      the binary (a hard link or copy, as the jailer makes)
//	/vmlinux, /initrd the guest kernel (hard links, else copies)
//	/rootfs.ext4      the sandbox's disk, owned by the VMM's uid
//	/api.sock         the API socket Firecracker makes
//	/firecracker.log, /vm.snap, /memory.snap, /memory.diff
//
// The root and the disk are the VMM uid's; the agent touches nothing in
// the root by a path a VMM could have swapped for a link (noFollow).

// jail is one sandbox's jail, as the launcher makes and starts it.
type jail struct {
	stateDir, id string
	uid          int
	netns        string
	// jailer is the jailer binary; "" when the launcher jails itself.
	jailer string
}

// prepare makes the jail's root with the kernel and the Firecracker
// binary in it, and gives the root and the disk to the VMM's uid.
func (j jail) prepare(firecracker, kernel, initrd string) error {
	if err := makeJailRoot(j.stateDir, j.id); err != nil {
		return err
	}
	root := jailerRoot(j.stateDir, j.id)
	files := map[string]string{"vmlinux": kernel, "initrd": initrd}
	if j.jailer == "" {
		files["firecracker"] = firecracker // the jailer copies it itself
	}
	for name, src := range files {
		if src == "" {
			continue
		}
		if err := linkOrCopy(src, filepath.Join(root, name)); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	if j.jailer == "" {
		// The devices Firecracker opens, as the jailer makes them, in a
		// dev made afresh: the old one was the VMM's to replace with a
		// link out of the jail.
		if err := os.RemoveAll(filepath.Join(root, "dev")); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
		for _, d := range []struct {
			path         string
			major, minor uint32
		}{{"dev/kvm", 10, 232}, {"dev/net/tun", 10, 200}} {
			p := filepath.Join(root, d.path)
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			_ = os.Remove(p)
			if err := syscall.Mknod(p, syscall.S_IFCHR|0o600, int(unix.Mkdev(d.major, d.minor))); err != nil {
				return fmt.Errorf("jail: %w", err)
			}
			if err := os.Lchown(p, j.uid, j.uid); err != nil {
				return fmt.Errorf("jail: %w", err)
			}
		}
	}
	disk := filepath.Join(root, "rootfs.ext4")
	for _, p := range []string{root, disk} {
		if err := os.Lchown(p, j.uid, j.uid); err != nil && !(p == disk && errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("jail: %w", err)
		}
	}
	return nil
}

// makeJailRoot makes the root of sandbox id's jail, and the link to it,
// if they are not there. A disk an older agent put in the state directory
// moves in.
func makeJailRoot(stateDir, id string) error {
	root := jailerRoot(stateDir, id)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	link := jailDir(stateDir)
	if dst, err := os.Readlink(link); err != nil || dst != root {
		_ = os.Remove(link)
		if err := os.Symlink(root, link); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	old := filepath.Join(stateDir, "rootfs.ext4")
	if _, err := os.Lstat(old); err == nil {
		if err := os.Rename(old, filepath.Join(root, "rootfs.ext4")); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	return nil
}

// command is Firecracker's launch for the jail: the jailer's command
// line, or Firecracker with the jail's steps in its SysProcAttr.
func (j jail) command(firecracker string) (*exec.Cmd, error) {
	fcArgs := []string{"--api-sock", inJail(paths(j.stateDir).api), "--id", microvm.NamePrefix + j.id}
	if j.jailer != "" {
		args := []string{
			"--id", j.id, "--exec-file", firecracker,
			"--uid", strconv.Itoa(j.uid), "--gid", strconv.Itoa(j.uid),
			"--chroot-base-dir", j.stateDir, "--netns", j.netns,
			"--", // the rest is Firecracker's
		}
		cmd := exec.Command(j.jailer, append(args, fcArgs...)...)
		// Root: the jailer drops to --uid after making the jail. Its own
		// session, for the reasons of the launcher's below, and a new pid
		// namespace, which the Firecracker it execs in place keeps: what
		// --new-pid-ns does, without the fork that would leave the agent
		// following a jailer that exits.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID}
		return cmd, nil
	}
	if j.uid == 0 {
		return nil, errors.New("firecracker: no uid of its own to run as")
	}
	cmd := exec.Command("/firecracker", fcArgs...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own session: Firecracker outlives the agent, and signals
		// to the agent's process group do not reach it. Private mount
		// and pid namespaces, as the jailer makes; the network
		// namespace is the launcher's to enter (Machine.Start).
		Setsid:     true,
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Chroot:     jailerRoot(j.stateDir, j.id),
		Credential: &syscall.Credential{Uid: uint32(j.uid), Gid: uint32(j.uid)},
	}
	return cmd, nil
}

// findJailer is the jailer binary next to firecracker, or on $PATH; "" if
// there is none.
func findJailer(firecracker string) string {
	if p, err := exec.LookPath(firecracker); err == nil {
		next := filepath.Join(filepath.Dir(p), "jailer")
		if st, err := os.Stat(next); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return next
		}
	}
	if p, err := exec.LookPath("jailer"); err == nil {
		return p
	}
	return ""
}

// linkOrCopy puts src at dst: a hard link where both are on one
// filesystem, else a copy (readable by all: a kernel or a binary).
func linkOrCopy(src, dst string) error {
	_ = os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// noFollow opens a file in the jail without following a link there: the
// VMM's uid owns the directory and may have put one in a file's place.
func noFollow(path string, flag int) (*os.File, error) {
	return os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
}
