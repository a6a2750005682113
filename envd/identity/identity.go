package identity

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnknownUser is returned when a user name has no passwd entry.
var ErrUnknownUser = errors.New("unknown user")

// User is a resolved Unix account.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
}

// Lookup resolves a user by name.
func Lookup(name string) (User, error) {
	if name == "" {
		return User{}, fmt.Errorf("%w: empty name", ErrUnknownUser)
	}
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return User{}, fmt.Errorf("%w: %q", ErrUnknownUser, name)
		}
		return User{}, fmt.Errorf("look up user %q: %w", name, err)
	}
	return fromOS(u)
}

// Current is the user envd itself runs as.
func Current() (User, error) {
	u, err := user.Current()
	if err != nil {
		return User{}, fmt.Errorf("look up current user: %w", err)
	}
	return fromOS(u)
}

func fromOS(u *user.User) (User, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q: bad uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q: bad gid %q", u.Username, u.Gid)
	}
	out := User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				out.Groups = append(out.Groups, uint32(g))
			}
		}
	}
	if out.Home == "" {
		out.Home = "/"
	}
	return out, nil
}

// Credential returns the credential a child process needs to run as u, or
// nil when envd already runs as u (switching would need privileges envd may
// not have, e.g. when it runs unprivileged on a developer's host).
func (u User) Credential() *syscall.Credential {
	if uint32(os.Getuid()) == u.UID && uint32(os.Getgid()) == u.GID {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
}

// ErrBadPath is returned for paths that cannot name a file.
var ErrBadPath = errors.New("invalid path")

// Resolve turns a client-supplied path into a clean absolute path: relative
// paths and a leading "~" resolve against the user's home directory. It does
// not touch the filesystem and does not confine the path: inside a sandbox
// the user may name any file, and the kernel enforces permissions.
func (u User) Resolve(path string) (string, error) {
	if strings.IndexByte(path, 0) >= 0 {
		return "", fmt.Errorf("%w: contains a NUL byte", ErrBadPath)
	}
	home := u.Home
	if !filepath.IsAbs(home) || strings.IndexByte(home, 0) >= 0 {
		home = "/" // a broken passwd entry must not make paths relative
	}
	switch {
	case path == "":
		return "", fmt.Errorf("%w: empty", ErrBadPath)
	case path == "~":
		path = home
	case strings.HasPrefix(path, "~/"):
		path = filepath.Join(home, path[2:])
	case !filepath.IsAbs(path):
		path = filepath.Join(home, path)
	}
	return filepath.Clean(path), nil
}

// Chown gives path to u when envd runs as someone else, so files envd creates
// on a user's behalf belong to that user.
func (u User) Chown(path string) error {
	if u.Credential() == nil {
		return nil
	}
	if err := os.Lchown(path, int(u.UID), int(u.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}
